// Package store writes received instances durably as Part-10 files. An instance is first written
// to a temporary file under DATA/incoming, checked, fsynced, renamed to
// DATA/studies/<AE>/<StudyUID>/<SeriesUID>/<SOPInstanceUID>.dcm and the directory is fsynced;
// only then is it reported as stored, so a success status never precedes durability. A re-sent
// instance replaces the earlier file atomically: it exists exactly once.
package store

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"dpersona/gateway/part10"
	"dpersona/internal/dicomstd"
)

// Store is the instance store rooted at a data directory.
type Store struct {
	dataDir     string
	incomingDir string
	studiesDir  string
	// NoSync skips fsync (tests of logic only; never in production).
	noSync bool

	dirSyncs sync.Map // directory path -> *dirSyncer
	seq      atomic.Uint64
	mkdirMu  sync.Mutex

	// The disk watermark: minFree bytes stay free. Every write first reserves its bytes against
	// the file system's free space less the bytes other writes have reserved and not yet written,
	// so concurrent instances cannot together overshoot it.
	minFree  atomic.Uint64
	diskMu   sync.Mutex
	reserved uint64
}

// Options tune a store.
type Options struct {
	// NoSync disables fsync; durability is then lost on power failure. For benchmarks of the
	// network path only.
	NoSync bool
}

// Open prepares DATA/incoming and DATA/studies. Files left in incoming by a previous run were never
// acknowledged and are removed.
func Open(dataDir string, opt Options) (*Store, error) {
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		return nil, err
	}
	s := &Store{dataDir: abs, incomingDir: filepath.Join(abs, "incoming"), studiesDir: filepath.Join(abs, "studies"), noSync: opt.NoSync}
	for _, d := range []string{s.incomingDir, s.studiesDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("store: create %s: %w", d, err)
		}
	}
	entries, err := os.ReadDir(s.incomingDir)
	if err != nil {
		return nil, fmt.Errorf("store: read %s: %w", s.incomingDir, err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(s.incomingDir, e.Name())); err != nil {
			return nil, fmt.Errorf("store: remove unacknowledged %s: %w", e.Name(), err)
		}
	}
	return s, nil
}

// DataDir is the absolute data directory.
func (s *Store) DataDir() string { return s.dataDir }

// StudiesDir is DATA/studies.
func (s *Store) StudiesDir() string { return s.studiesDir }

// StudyDir is the directory of one study of one called AE.
func (s *Store) StudyDir(calledAE, studyUID string) string {
	return filepath.Join(s.studiesDir, AEDirName(calledAE), studyUID)
}

// AEDirName maps an AE title to a directory name, reversibly (AEFromDirName): letters, digits,
// '-' and '_' stay, every other byte (space, '/', '.', '%', ...) becomes %XX. "." and ".." are
// never produced.
func AEDirName(ae string) string {
	var b strings.Builder
	for i := 0; i < len(ae); i++ {
		c := ae[i]
		if (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	if b.Len() == 0 {
		return "%"
	}
	return b.String()
}

// AEFromDirName inverts AEDirName.
func AEFromDirName(name string) (string, error) {
	if name == "%" {
		return "", nil
	}
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		if name[i] != '%' {
			b.WriteByte(name[i])
			continue
		}
		if i+2 >= len(name) {
			return "", fmt.Errorf("directory name %q: truncated %%XX escape", name)
		}
		c, err := strconv.ParseUint(name[i+1:i+3], 16, 8)
		if err != nil {
			return "", fmt.Errorf("directory name %q: bad escape %q", name, name[i:i+3])
		}
		b.WriteByte(byte(c))
		i += 2
	}
	return b.String(), nil
}

// Failure kinds, so the SCP can choose the DIMSE status.
var (
	// ErrOutOfResources: the disk is full or another local resource failed (status 0xA7xx).
	ErrOutOfResources = errors.New("out of resources")
	// ErrMismatch: the data set's SOP class or instance differs from the command's (0xA900).
	ErrMismatch = errors.New("data set does not match the command")
	// ErrCannotUnderstand: the data set cannot be parsed or lacks identifying attributes (0xC000).
	ErrCannotUnderstand = errors.New("cannot understand data set")
	// ErrBelowWatermark: writing would take free space below the disk watermark (0xA700); it is
	// wrapped with ErrOutOfResources.
	ErrBelowWatermark = errors.New("free disk space below the watermark")
)

// SetMinFreeBytes sets the disk watermark (0 turns it off): a write that would leave less free
// space fails with ErrBelowWatermark before any of its bytes are written.
func (s *Store) SetMinFreeBytes(n uint64) { s.minFree.Store(n) }

// MinFreeBytes is the disk watermark.
func (s *Store) MinFreeBytes() uint64 { return s.minFree.Load() }

// freeBytes reads the data directory's free space now (for unprivileged users).
func (s *Store) freeBytes() (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(s.dataDir, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// Headroom reports the free space left to writers (free space less the bytes reserved by writes
// in progress) and whether it is below the watermark. Without a watermark it reports (0, false).
func (s *Store) Headroom() (uint64, bool) {
	watermark := s.minFree.Load()
	if watermark == 0 {
		return 0, false
	}
	s.diskMu.Lock()
	defer s.diskMu.Unlock()
	free, err := s.freeBytes()
	if err != nil {
		return 0, false // unknown: the writes themselves will tell
	}
	free = sub0(free, s.reserved)
	return free, free < watermark
}

func sub0(a, b uint64) uint64 {
	if a < b {
		return 0
	}
	return a - b
}

// reserve claims n bytes of free space for a write about to happen, or fails with
// ErrBelowWatermark when the write would take free space below the watermark. It returns the
// bytes claimed, which the caller releases once they are written (they then show in the free
// space itself): 0 without a watermark or when the free space cannot be read.
func (s *Store) reserve(n int) (uint64, error) {
	watermark := s.minFree.Load()
	if watermark == 0 {
		return 0, nil
	}
	s.diskMu.Lock()
	defer s.diskMu.Unlock()
	free, err := s.freeBytes()
	if err != nil {
		return 0, nil // unknown: the write itself will tell
	}
	if left := sub0(free, s.reserved); left < watermark+uint64(n) {
		return 0, fmt.Errorf("%w (%d MB free, %d MB kept free)", ErrBelowWatermark, left>>20, watermark>>20)
	}
	s.reserved += uint64(n)
	return uint64(n), nil
}

func (s *Store) release(claimed uint64) {
	if claimed == 0 {
		return
	}
	s.diskMu.Lock()
	s.reserved = sub0(s.reserved, claimed)
	s.diskMu.Unlock()
}

// Incoming describes an instance about to be received: what the C-STORE command announced.
type Incoming struct {
	CalledAE, CallingAE string
	SOPClassUID         string
	SOPInstanceUID      string
	TransferSyntaxUID   string
}

// StoredInstance is an acknowledged instance on disk.
type StoredInstance struct {
	SOPInstanceUID, SOPClassUID string
	StudyInstanceUID            string
	SeriesInstanceUID           string
	Modality                    string
	TransferSyntaxUID           string
	Path                        string // absolute
	Size                        int64
	Frames                      int // NumberOfFrames, 1 for a single-frame instance
}

// Pending is an instance being written. Write the data set to it, then Commit or Discard.
type Pending struct {
	s      *Store
	in     Incoming
	f      *os.File
	wb     *writeback
	w      *bufio.Writer
	hdrLen int64 // the Part-10 header written by Begin
	size   int64 // data set bytes written
	// head keeps the first bytes of the data set, where the identifying attributes are, so that
	// Commit checks them without reading the file back.
	head []byte
	err  error
}

// headSize bounds Pending.head: the attributes Commit checks come before pixel data, in the first
// kilobytes of any real instance; a data set whose head does not hold them is read back instead.
const headSize = 16 * 1024

// writeBufferSize is the size of the writes into the temporary file, and the copy buffer's.
const writeBufferSize = 256 * 1024

// Buffers are reused across instances: at hundreds of instances per second, fresh 256 KiB buffers
// per instance are most of the garbage the receive path makes.
var (
	writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, writeBufferSize) }}
	copyPool   = sync.Pool{New: func() any { b := make([]byte, writeBufferSize); return &b }}
	headPool   = sync.Pool{New: func() any { b := make([]byte, 0, headSize); return &b }}
)

// writeback passes writes to the file and asks the kernel to start writing them to disk at once
// (sync_file_range SYNC_FILE_RANGE_WRITE, asynchronous), so the disk works while the rest of the
// instance is still on the network and the fsync before the response has little left to do. It
// is a hint: durability still comes from the fsync in Commit.
type writeback struct {
	s       *Store
	f       *os.File
	fd      uintptr
	off     int64
	started int64
	noSync  bool
}

func (w *writeback) Write(b []byte) (int, error) {
	claimed, err := w.s.reserve(len(b))
	if err != nil {
		return 0, err
	}
	n, err := w.f.Write(b)
	w.s.release(claimed)
	w.off += int64(n)
	if !w.noSync && w.off-w.started >= writeBufferSize {
		const syncFileRangeWrite = 2 // SYNC_FILE_RANGE_WRITE
		syscall.Syscall6(syscall.SYS_SYNC_FILE_RANGE, w.fd, uintptr(w.started), uintptr(w.off-w.started), syncFileRangeWrite, 0, 0)
		w.started = w.off
	}
	return n, err
}

func resourceError(op string, err error) error {
	return fmt.Errorf("%w: %s: %w", ErrOutOfResources, op, err)
}

// IsDiskFull reports whether err comes from a full disk, an exhausted quota or the disk watermark.
func IsDiskFull(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || errors.Is(err, ErrBelowWatermark)
}

// Begin creates the temporary file and writes the Part-10 header for the announced instance.
func (s *Store) Begin(in Incoming) (*Pending, error) {
	// The strict PS3.5 9.1 rule (no leading-zero components), not only path safety: an instance
	// whose UIDs the standard forbids would be refused by every archive it is forwarded to. The
	// value is not quoted when it is not UID-like: it may be a patient's name.
	if !dicomstd.ValidUID(in.SOPInstanceUID) {
		return nil, fmt.Errorf("%w: command's SOP instance UID %s is not a valid UID (PS3.5 9.1)", ErrCannotUnderstand, dicomstd.LoggableUID(in.SOPInstanceUID))
	}
	// A per-store sequence keeps names unique (incoming/ belongs to this process alone: it is
	// emptied on start) and cheap to generate.
	name := filepath.Join(s.incomingDir, fmt.Sprintf("%s.%d.part", in.SOPInstanceUID, s.seq.Add(1)))
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, resourceError("create temporary file", err)
	}
	wb := &writeback{s: s, f: f, fd: f.Fd(), noSync: s.noSync}
	w := writerPool.Get().(*bufio.Writer)
	w.Reset(wb)
	head := headPool.Get().(*[]byte)
	p := &Pending{s: s, in: in, f: f, wb: wb, w: w, head: (*head)[:0]}
	hdr := part10.EncodeMeta(part10.Meta{
		MediaStorageSOPClassUID:    in.SOPClassUID,
		MediaStorageSOPInstanceUID: in.SOPInstanceUID,
		TransferSyntaxUID:          in.TransferSyntaxUID,
		ImplementationClassUID:     dicomstd.ImplementationClassUID,
		ImplementationVersionName:  dicomstd.ImplementationVersionName,
		SourceAETitle:              in.CallingAE,
	})
	if _, err := p.w.Write(hdr); err != nil {
		p.Discard()
		return nil, resourceError("write file meta", err)
	}
	p.hdrLen = int64(len(hdr))
	return p, nil
}

// Write appends data set bytes. After the first error it keeps accepting (and dropping) bytes so
// the caller can drain the network; the error is reported by Commit.
func (p *Pending) Write(b []byte) (int, error) {
	if room := headSize - len(p.head); room > 0 && p.head != nil {
		p.head = append(p.head, b[:min(room, len(b))]...)
	}
	if p.err == nil && p.w != nil {
		n, err := p.w.Write(b)
		p.size += int64(n)
		if err != nil {
			p.err = resourceError("write data set", err)
		}
	}
	return len(b), nil
}

// ReadFrom lets io.Copy hand large chunks straight to the buffered writer.
func (p *Pending) ReadFrom(r io.Reader) (int64, error) {
	bp := copyPool.Get().(*[]byte)
	defer copyPool.Put(bp)
	buf := *bp
	var total int64
	for {
		n, err := r.Read(buf)
		if n > 0 {
			p.Write(buf[:n])
			total += int64(n)
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// Discard removes the temporary file.
func (p *Pending) Discard() {
	if p.f != nil {
		name := p.f.Name()
		p.f.Close()
		os.Remove(name)
		p.f = nil
	}
	p.release()
}

// release returns the buffers to their pools (once the file is closed or no longer written).
func (p *Pending) release() {
	if p.w != nil {
		p.w.Reset(nil)
		writerPool.Put(p.w)
		p.w = nil
	}
	if p.head != nil {
		h := p.head[:0]
		headPool.Put(&h)
		p.head = nil
	}
}

// identify reads the identifying attributes of the written data set: from the kept head when it
// holds them all, else (a very long header before the UIDs) from the file.
func (p *Pending) identify() (part10.Instance, error) {
	if p.size <= int64(len(p.head)) || len(p.head) == headSize {
		inst, err := part10.ScanInstance(bufio.NewReaderSize(bytes.NewReader(p.head), 4096), p.in.TransferSyntaxUID)
		complete := p.size == int64(len(p.head)) // the whole data set: the scan's answer is final
		if complete || err == nil && inst.SOPInstanceUID != "" && inst.StudyInstanceUID != "" && inst.SeriesInstanceUID != "" {
			return inst, err
		}
	}
	if _, err := p.f.Seek(0, io.SeekStart); err != nil {
		return part10.Instance{}, resourceError("seek", err)
	}
	_, inst, _, err := part10.ReadFileHeader(p.f)
	return inst, err
}

// Commit checks the written instance against the command, makes it durable, and moves it into
// its study. On any error the temporary file is removed and nothing is stored.
func (p *Pending) Commit() (StoredInstance, error) {
	defer p.Discard()
	if p.err != nil {
		return StoredInstance{}, p.err
	}
	if err := p.w.Flush(); err != nil {
		return StoredInstance{}, resourceError("write data set", err)
	}
	inst, err := p.identify()
	off := p.hdrLen
	if err != nil {
		return StoredInstance{}, fmt.Errorf("%w: instance %s: %w", ErrCannotUnderstand, p.in.SOPInstanceUID, err)
	}
	if p.size == 0 {
		return StoredInstance{}, fmt.Errorf("%w: instance %s: empty data set", ErrCannotUnderstand, p.in.SOPInstanceUID)
	}
	switch {
	case inst.SOPInstanceUID == "":
		return StoredInstance{}, fmt.Errorf("%w: instance %s: data set has no SOPInstanceUID (0008,0018)", ErrCannotUnderstand, p.in.SOPInstanceUID)
	case inst.SOPInstanceUID != p.in.SOPInstanceUID:
		return StoredInstance{}, fmt.Errorf("%w: SOPInstanceUID of the data set differs from the command's (%s, command %s)", ErrMismatch, dicomstd.LoggableUID(inst.SOPInstanceUID), p.in.SOPInstanceUID)
	case inst.SOPClassUID != "" && inst.SOPClassUID != p.in.SOPClassUID:
		return StoredInstance{}, fmt.Errorf("%w: SOPClassUID of the data set differs from the command's (%s, command %s, instance %s)", ErrMismatch, dicomstd.LoggableUID(inst.SOPClassUID), p.in.SOPClassUID, inst.SOPInstanceUID)
	case !dicomstd.ValidUID(inst.StudyInstanceUID):
		return StoredInstance{}, fmt.Errorf("%w: instance %s: StudyInstanceUID (0020,000D) %s is missing or not a valid UID (PS3.5 9.1)", ErrCannotUnderstand, inst.SOPInstanceUID, dicomstd.LoggableUID(inst.StudyInstanceUID))
	case !dicomstd.ValidUID(inst.SeriesInstanceUID):
		return StoredInstance{}, fmt.Errorf("%w: instance %s: SeriesInstanceUID (0020,000E) %s is missing or not a valid UID (PS3.5 9.1)", ErrCannotUnderstand, inst.SOPInstanceUID, dicomstd.LoggableUID(inst.SeriesInstanceUID))
	}
	if !p.s.noSync {
		if err := p.f.Sync(); err != nil {
			return StoredInstance{}, resourceError("fsync", err)
		}
	}
	seriesDir := filepath.Join(p.s.StudyDir(p.in.CalledAE, inst.StudyInstanceUID), inst.SeriesInstanceUID)
	if err := p.s.mkdirDurable(seriesDir); err != nil {
		return StoredInstance{}, resourceError("create series directory", err)
	}
	final := filepath.Join(seriesDir, inst.SOPInstanceUID+".dcm")
	if err := os.Rename(p.f.Name(), final); err != nil {
		return StoredInstance{}, resourceError("rename into study", err)
	}
	p.f.Close()
	p.f = nil
	if err := p.s.syncDir(seriesDir); err != nil {
		// The file is in place but its directory entry may not survive a crash: report failure
		// (the sender retries; a re-sent instance replaces this one).
		return StoredInstance{}, resourceError("fsync series directory", err)
	}
	return StoredInstance{
		SOPInstanceUID:    inst.SOPInstanceUID,
		SOPClassUID:       p.in.SOPClassUID,
		StudyInstanceUID:  inst.StudyInstanceUID,
		SeriesInstanceUID: inst.SeriesInstanceUID,
		Modality:          inst.Modality,
		TransferSyntaxUID: p.in.TransferSyntaxUID,
		Path:              final,
		Size:              off + p.size,
		Frames:            inst.Frames,
	}, nil
}

// mkdirDurable creates dir and any missing parents, fsyncing each parent whose entries changed.
func (s *Store) mkdirDurable(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	s.mkdirMu.Lock()
	defer s.mkdirMu.Unlock()
	var missing []string
	for d := dir; d != s.studiesDir && d != filepath.Dir(d); d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		}
		missing = append(missing, d)
	}
	for i := len(missing) - 1; i >= 0; i-- {
		if err := os.Mkdir(missing[i], 0o755); err != nil && !os.IsExist(err) {
			return err
		}
		if err := s.syncDir(filepath.Dir(missing[i])); err != nil {
			return err
		}
	}
	return nil
}

// dirSyncer coalesces directory fsyncs: a caller needs one fsync that started after its rename;
// when several renames land in the same directory concurrently, one fsync covers them all.
type dirSyncer struct {
	renames atomic.Uint64 // count of renames announced
	mu      sync.Mutex
	synced  uint64 // renames covered by the last completed fsync
}

func (s *Store) syncDir(dir string) error {
	if s.noSync {
		return nil
	}
	v, _ := s.dirSyncs.LoadOrStore(dir, &dirSyncer{})
	ds := v.(*dirSyncer)
	mine := ds.renames.Add(1)
	ds.mu.Lock()
	defer ds.mu.Unlock()
	if ds.synced >= mine {
		return nil
	}
	covered := ds.renames.Load()
	if err := dicomstd.SyncDir(dir); err != nil {
		return err
	}
	ds.synced = covered
	return nil
}

// Remove deletes a stored file and fsyncs its directory (used when a re-sent instance moved to
// another series).
func (s *Store) Remove(path string) error {
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return err
	}
	return s.syncDir(filepath.Dir(path))
}

// ReadInstance reads the identity of a stored Part-10 file (used to rebuild state on start).
func ReadInstance(path string) (StoredInstance, error) {
	f, err := os.Open(path)
	if err != nil {
		return StoredInstance{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return StoredInstance{}, err
	}
	meta, inst, _, err := part10.ReadFileHeader(f)
	if err != nil {
		return StoredInstance{}, fmt.Errorf("%s: %w", path, err)
	}
	return StoredInstance{
		SOPInstanceUID:    inst.SOPInstanceUID,
		SOPClassUID:       meta.MediaStorageSOPClassUID,
		StudyInstanceUID:  inst.StudyInstanceUID,
		SeriesInstanceUID: inst.SeriesInstanceUID,
		Modality:          inst.Modality,
		TransferSyntaxUID: meta.TransferSyntaxUID,
		Path:              path,
		Size:              st.Size(),
		Frames:            inst.Frames,
	}, nil
}

// SourceAE reads the calling AE recorded in a stored file's meta group.
func SourceAE(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	m, _, err := part10.ReadMeta(bufio.NewReader(f))
	if err != nil {
		return ""
	}
	return m.SourceAETitle
}
