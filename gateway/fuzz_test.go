package gateway

import (
	"bytes"
	"encoding/binary"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"dpersona/gateway/dimse"
	"dpersona/gateway/part10"
	"dpersona/gateway/pdu"
	"dpersona/gateway/store"
	"dpersona/internal/testutil"
)

// FuzzIngest feeds arbitrary bytes after a valid A-ASSOCIATE-RQ into the storage SCP (upper
// layer, DIMSE, store): the association must end (no hang, no panic), and whatever was stored is
// a complete instance filed under its own SOP instance UID. The seeds are real C-STOREs of a
// fixture, split into PDVs in different ways, an echo and a release.
func FuzzIngest(f *testing.F) {
	h := newIngestHarness(f, f.TempDir())
	for _, s := range h.seeds {
		f.Add(s)
	}
	// Initialise the process-wide state the server touches (metric children, pools) for each
	// rejection path, so that a run's coverage depends on its input only.
	for _, in := range h.warmups() {
		h.run(&testing.T{}, in)
	}
	f.Fuzz(h.run)
}

// ingestHarness feeds each input to a fresh storage SCP over a fresh store (state carried from
// one run to the next would make the fuzzer's coverage irreproducible).
type ingestHarness struct {
	seeds   [][]byte
	rq      []byte
	dataDir string
}

func newIngestHarness(tb testing.TB, dataDir string) *ingestHarness {
	meta, inst, _ := readFixture(tb, testutil.Testdata("dicom", "ct2-pydicom", "17106"))
	// The data set: the fixture's identifying attributes only, in implicit VR little endian, so
	// that inputs stay small (the fuzzer minimises every interesting input by re-running it).
	data := implicitElements([][2]any{
		{uint32(part10.TagSOPClassUID), inst.SOPClassUID},
		{uint32(part10.TagSOPInstanceUID), inst.SOPInstanceUID},
		{uint32(part10.TagModality), inst.Modality},
		{uint32(part10.TagStudyInstanceUID), inst.StudyInstanceUID},
		{uint32(part10.TagSeriesInstanceUID), inst.SeriesInstanceUID},
	})
	cmd := (&dimse.Command{CommandField: dimse.CStoreRQ, MessageID: 1, AffectedSOPClassUID: meta.MediaStorageSOPClassUID, AffectedSOPInstanceUID: meta.MediaStorageSOPInstanceUID, CommandDataSetType: dimse.DataSetPresent}).Encode()
	echo := (&dimse.Command{CommandField: dimse.CEchoRQ, MessageID: 2, AffectedSOPClassUID: dimse.VerificationSOPClass, CommandDataSetType: dimse.NoDataSet}).Encode()
	storeOnePDU := (&pdu.PDataTF{PDVs: []pdu.PDV{{ContextID: 1, Command: true, Last: true, Data: cmd}, {ContextID: 1, Last: true, Data: data}}}).Encode()
	var fragmented []byte
	fragmented = append(fragmented, (&pdu.PDataTF{PDVs: []pdu.PDV{{ContextID: 1, Command: true, Data: cmd[:10]}, {ContextID: 1, Command: true, Last: true, Data: cmd[10:]}}}).Encode()...)
	for i := 0; i < len(data); i += 50 {
		end := min(i+50, len(data))
		fragmented = append(fragmented, (&pdu.PDataTF{PDVs: []pdu.PDV{{ContextID: 1, Last: end == len(data), Data: data[i:end]}}}).Encode()...)
	}
	echoPDU := (&pdu.PDataTF{PDVs: []pdu.PDV{{ContextID: 3, Command: true, Last: true, Data: echo}}}).Encode()
	release := pdu.ReleaseRQ{}.Encode()
	h := &ingestHarness{dataDir: dataDir}
	h.seeds = [][]byte{
		append(append(append([]byte{}, storeOnePDU...), echoPDU...), release...),
		append(append([]byte{}, fragmented...), release...),
		append(append([]byte{}, echoPDU...), storeOnePDU[:len(storeOnePDU)/2]...),
	}
	h.rq = (&pdu.AssociateRQ{CalledAE: "DPERSONA", CallingAE: "FUZZ", ApplicationContext: pdu.ApplicationContextName, UserInfo: pdu.UserInfo{MaxPDULength: 16384},
		PresentationContexts: []pdu.PresentationContextRQ{
			{ID: 1, AbstractSyntax: meta.MediaStorageSOPClassUID, TransferSyntaxes: []string{part10.ImplicitVRLittleEndian}},
			{ID: 3, AbstractSyntax: dimse.VerificationSOPClass, TransferSyntaxes: []string{part10.ImplicitVRLittleEndian}},
		}}).Encode()
	return h
}

// warmups are inputs that walk the failure paths once.
func (h *ingestHarness) warmups() [][]byte {
	out := [][]byte{nil, {1, 2, 3}, {0x09, 0, 0, 0, 0, 0}, {0x04, 0, 0x7F, 0, 0, 0}, {0x04, 0, 0, 0, 0, 8, 0, 0, 0, 4, 1, 3, 1, 2}}
	for _, s := range h.seeds {
		for _, cut := range []int{len(s) / 3, len(s) / 2, len(s) - 3} {
			out = append(out, s[:cut])
		}
		b := append([]byte{}, s...)
		b[len(b)/2] ^= 0xFF
		out = append(out, b, s)
	}
	return out
}

func (h *ingestHarness) run(t *testing.T, in []byte) {
	// A fixed path, emptied each time: random names would change the coverage from run to run.
	dataDir := filepath.Join(h.dataDir, "run")
	os.RemoveAll(dataDir)
	defer os.RemoveAll(dataDir)
	st, err := store.Open(dataDir, store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := NewServer(Config{Policy: Policy{AETitles: []string{"DPERSONA"}}, Logger: slog.New(slog.DiscardHandler)}, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The peer is a scripted connection: the request, the input, then end of stream. The server
	// runs in this goroutine, so every run is deterministic (the fuzzer's coverage stays stable).
	conn := &scriptedConn{r: bytes.NewReader(append(append([]byte{}, h.rq...), in...))}
	cs := &connState{conn: conn, busy: true}
	srv.mu.Lock()
	srv.conns[cs] = struct{}{}
	srv.handlers.Add(1)
	srv.mu.Unlock()
	srv.serveConn(cs)
	files, _ := filepath.Glob(filepath.Join(dataDir, "studies", "*", "*", "*", "*.dcm"))
	for _, p := range files {
		fh, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		_, inst, _, err := part10.ReadFileHeader(fh)
		fh.Close()
		if err != nil || inst.SOPInstanceUID != strings.TrimSuffix(filepath.Base(p), ".dcm") {
			t.Fatalf("stored %s is not a complete instance of that UID (%q, %v)", p, inst.SOPInstanceUID, err)
		}
	}
	if e, _ := os.ReadDir(filepath.Join(dataDir, "incoming")); len(e) != 0 {
		t.Fatalf("temporary files left: %d", len(e))
	}
}

// implicitElements encodes (tag, string value) pairs in implicit VR little endian, values padded
// to even length.
func implicitElements(els [][2]any) []byte {
	var b []byte
	for _, e := range els {
		tag, v := e[0].(uint32), []byte(e[1].(string))
		if len(v)%2 == 1 {
			v = append(v, 0)
		}
		b = binary.LittleEndian.AppendUint16(b, uint16(tag>>16))
		b = binary.LittleEndian.AppendUint16(b, uint16(tag))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(v)))
		b = append(b, v...)
	}
	return b
}

// scriptedConn is a net.Conn that reads a fixed byte stream and discards what is written.
type scriptedConn struct {
	r      *bytes.Reader
	closed bool
}

func (c *scriptedConn) Read(p []byte) (int, error) {
	if c.closed {
		return 0, net.ErrClosed
	}
	return c.r.Read(p)
}

func (c *scriptedConn) Write(p []byte) (int, error) {
	if c.closed {
		return 0, net.ErrClosed
	}
	return len(p), nil
}

func (c *scriptedConn) Close() error { c.closed = true; return nil }
func (c *scriptedConn) LocalAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 104}
}
func (c *scriptedConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
}
func (c *scriptedConn) SetDeadline(time.Time) error      { return nil }
func (c *scriptedConn) SetReadDeadline(time.Time) error  { return nil }
func (c *scriptedConn) SetWriteDeadline(time.Time) error { return nil }
