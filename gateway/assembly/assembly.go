// Package assembly groups acknowledged instances into studies keyed by (called AE,
// StudyInstanceUID) and series, declares a study complete after a quiet window without new
// instances, and hands it to a StudySink, retrying with back-off until the sink accepts it. The
// instance files are the truth: on start the state is rebuilt from DATA/studies, and study.json
// only records which instance set the sink has already accepted, so that nothing acknowledged is
// ever dropped and nothing already accepted is handed over again needlessly.
package assembly

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"dpersona/gateway/store"
	"dpersona/internal/dicomstd"
	"dpersona/internal/obs"
)

// StudySink receives completed studies. It returns nil only once the study is durably accepted
// (for the bus: stored in JetStream); until then the assembler keeps retrying, across restarts.
type StudySink interface {
	StudyComplete(ctx context.Context, s CompletedStudy) error
}

// StudySinkFunc adapts a function to StudySink.
type StudySinkFunc func(ctx context.Context, s CompletedStudy) error

// StudyComplete calls f.
func (f StudySinkFunc) StudyComplete(ctx context.Context, s CompletedStudy) error { return f(ctx, s) }

// CompletedStudy is handed to the sink.
type CompletedStudy struct {
	CalledAE, CallingAE, StudyInstanceUID string
	Dir                                   string // absolute directory holding this study's Part-10 files
	Series                                []CompletedSeries
	CompletedAt                           time.Time
	// FirstReceivedAt is when this process first saw an instance of the study (after a restart:
	// the restart time), for the receive-stage latency metric.
	FirstReceivedAt time.Time
}

// CompletedSeries is one series of a completed study.
type CompletedSeries struct {
	SeriesInstanceUID, Modality string
	Instances                   []StoredInstance
}

// StoredInstance is one acknowledged instance.
type StoredInstance struct {
	SOPInstanceUID, SOPClassUID string
	Path                        string // absolute
	Size                        int64
	Frames                      int // NumberOfFrames (1 for a single-frame instance)
}

// InstanceSetKey identifies the instance set of a study: sha256 over the called AE, the study UID
// and the sorted SOP instance UIDs. A replay of the same set has the same key.
func (c CompletedStudy) InstanceSetKey() string {
	var uids []string
	for _, s := range c.Series {
		for _, i := range s.Instances {
			uids = append(uids, i.SOPInstanceUID)
		}
	}
	return instanceSetKey(c.CalledAE, c.StudyInstanceUID, uids)
}

func instanceSetKey(ae, study string, uids []string) string {
	sorted := append([]string(nil), uids...)
	sort.Strings(sorted)
	h := sha256.New()
	h.Write([]byte(ae))
	h.Write([]byte{0})
	h.Write([]byte(study))
	for _, u := range sorted {
		h.Write([]byte{0})
		h.Write([]byte(u))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// States reported for a study.
const (
	StateReceiving = "receiving"
	StateComplete  = "complete"
)

// Config configures an Assembler.
type Config struct {
	Store       *store.Store
	QuietWindow time.Duration // default 10s
	Sink        StudySink
	Logger      *slog.Logger
	// RetryMin and RetryMax bound the back-off between sink attempts (defaults 200ms and 30s).
	RetryMin, RetryMax time.Duration
}

type studyKey struct{ ae, uid string }

type series struct {
	uid, modality string
	instances     map[string]StoredInstance
}

type study struct {
	key        studyKey
	callingAE  string
	dir        string
	series     map[string]*series
	bySOP      map[string]string // SOP instance UID -> series UID
	lastChange time.Time
	firstSeen  time.Time
	complete   bool   // quiet window passed for the current instance set
	handedOff  string // instance-set key the sink accepted ("" = none)
	handingOff bool   // a sink attempt is running
	setKey     string // cached instanceSetKey of the current instances ("" = recompute)
	attempts   int
	lastError  string
	completeAt time.Time
}

func (s *study) count() int {
	n := 0
	for _, se := range s.series {
		n += len(se.instances)
	}
	return n
}

// key returns the instance-set key, recomputed only after the set changed.
func (s *study) instanceKey() string {
	if s.setKey == "" {
		s.setKey = instanceSetKey(s.key.ae, s.key.uid, s.uids())
	}
	return s.setKey
}

func (s *study) uids() []string {
	var out []string
	for _, se := range s.series {
		for u := range se.instances {
			out = append(out, u)
		}
	}
	return out
}

// Assembler tracks studies. Add is safe for concurrent use; Run drives completion and hand-off.
type Assembler struct {
	cfg     Config
	log     *slog.Logger
	mu      sync.Mutex
	studies map[studyKey]*study
	wake    chan struct{}
	wg      sync.WaitGroup
}

// stateFile is DATA/studies/<AE>/<StudyUID>/study.json.
type stateFile struct {
	CalledAE         string    `json:"called_ae"`
	CallingAE        string    `json:"calling_ae,omitempty"`
	StudyInstanceUID string    `json:"study_instance_uid"`
	HandedOffSet     string    `json:"handed_off_set,omitempty"`
	HandedOffCount   int       `json:"handed_off_instances,omitempty"`
	HandedOffAt      time.Time `json:"handed_off_at,omitempty"`
}

const stateFileName = "study.json"

// New creates an assembler and rebuilds its state from the store's studies directory.
func New(cfg Config) (*Assembler, error) {
	if cfg.Store == nil || cfg.Sink == nil {
		return nil, errors.New("assembly: Store and Sink are required")
	}
	if cfg.QuietWindow <= 0 {
		cfg.QuietWindow = 10 * time.Second
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = 200 * time.Millisecond
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	a := &Assembler{cfg: cfg, log: cfg.Logger, studies: map[studyKey]*study{}, wake: make(chan struct{}, 1)}
	if err := a.rebuild(); err != nil {
		return nil, err
	}
	return a, nil
}

// rebuild scans DATA/studies/<AE>/<Study>/<Series>/*.dcm. Each study starts a fresh quiet
// window: its sender may still be sending after our restart.
func (a *Assembler) rebuild() error {
	root := a.cfg.Store.StudiesDir()
	aes, err := os.ReadDir(root)
	if err != nil {
		return fmt.Errorf("assembly: read %s: %w", root, err)
	}
	now := time.Now()
	total := 0
	for _, aeEnt := range aes {
		if !aeEnt.IsDir() {
			continue
		}
		studyDirs, err := os.ReadDir(filepath.Join(root, aeEnt.Name()))
		if err != nil {
			return err
		}
		for _, sEnt := range studyDirs {
			if !sEnt.IsDir() {
				continue
			}
			dir := filepath.Join(root, aeEnt.Name(), sEnt.Name())
			st, n, err := a.loadStudy(dir, aeEnt.Name(), sEnt.Name(), now)
			if err != nil {
				return err
			}
			if st == nil {
				continue
			}
			total += n
			a.studies[st.key] = st
		}
	}
	if len(a.studies) > 0 {
		a.log.Info("study state rebuilt from disk", "studies", len(a.studies), "instances", total)
	}
	return nil
}

func (a *Assembler) loadStudy(dir, aeDir, studyUID string, now time.Time) (*study, int, error) {
	var sf stateFile
	if b, err := os.ReadFile(filepath.Join(dir, stateFileName)); err == nil {
		if err := json.Unmarshal(b, &sf); err != nil {
			a.log.Warn("ignoring unreadable study state; the study will be handed off again", "dir", dir, "err", err, obs.Correlation(obs.StudyCorrelationID(sf.CalledAE, studyUID)))
			sf = stateFile{}
		}
	}
	st := &study{dir: dir, series: map[string]*series{}, bySOP: map[string]string{}, lastChange: now, firstSeen: now}
	st.key = studyKey{ae: sf.CalledAE, uid: studyUID}
	if st.key.ae == "" {
		// No state file yet (a crash right after the first instance): the directory name
		// encodes the AE title reversibly.
		ae, err := store.AEFromDirName(aeDir)
		if err != nil {
			a.log.Error("study directory with an undecodable AE name; skipped", "dir", dir, "err", err)
			return nil, 0, nil
		}
		st.key.ae = ae
	}
	st.callingAE = sf.CallingAE
	seriesDirs, err := os.ReadDir(dir)
	if err != nil {
		return nil, 0, err
	}
	n := 0
	for _, se := range seriesDirs {
		if !se.IsDir() {
			continue
		}
		files, err := filepath.Glob(filepath.Join(dir, se.Name(), "*.dcm"))
		if err != nil {
			return nil, 0, err
		}
		for _, f := range files {
			inst, err := store.ReadInstance(f)
			if err != nil {
				// Only complete, fsynced files are ever renamed here, so this is outside damage:
				// keep the file, report it, and leave it out of the study.
				a.log.Error("stored instance unreadable; left out of its study", "path", f, "err", err)
				continue
			}
			if st.callingAE == "" {
				st.callingAE = store.SourceAE(f)
			}
			a.addLocked(st, inst)
			n++
		}
	}
	if n == 0 {
		return nil, 0, nil
	}
	if sf.HandedOffSet != "" && sf.HandedOffSet == st.instanceKey() {
		st.complete = true
		st.handedOff = sf.HandedOffSet
		st.completeAt = sf.HandedOffAt
	}
	return st, n, nil
}

func (a *Assembler) addLocked(st *study, inst store.StoredInstance) (duplicate bool, stale string) {
	if prev, ok := st.bySOP[inst.SOPInstanceUID]; ok {
		if prev == inst.SeriesInstanceUID {
			duplicate = true
		} else if old := st.series[prev]; old != nil {
			stale = old.instances[inst.SOPInstanceUID].Path
			delete(old.instances, inst.SOPInstanceUID)
			if len(old.instances) == 0 {
				delete(st.series, prev)
			}
		}
	}
	se := st.series[inst.SeriesInstanceUID]
	if se == nil {
		se = &series{uid: inst.SeriesInstanceUID, modality: inst.Modality, instances: map[string]StoredInstance{}}
		st.series[inst.SeriesInstanceUID] = se
	}
	if se.modality == "" {
		se.modality = inst.Modality
	}
	se.instances[inst.SOPInstanceUID] = StoredInstance{SOPInstanceUID: inst.SOPInstanceUID, SOPClassUID: inst.SOPClassUID, Path: inst.Path, Size: inst.Size, Frames: inst.Frames}
	st.bySOP[inst.SOPInstanceUID] = inst.SeriesInstanceUID
	if !duplicate {
		st.setKey = ""
	}
	return duplicate, stale
}

// Add records an acknowledged instance. A re-sent instance does not count twice; one re-sent
// into another series moves there (its old file is removed).
func (a *Assembler) Add(calledAE, callingAE string, inst store.StoredInstance) {
	key := studyKey{ae: calledAE, uid: inst.StudyInstanceUID}
	a.mu.Lock()
	st := a.studies[key]
	now := time.Now()
	isNew := st == nil
	if isNew {
		st = &study{key: key, callingAE: callingAE, dir: a.cfg.Store.StudyDir(calledAE, inst.StudyInstanceUID), series: map[string]*series{}, bySOP: map[string]string{}, firstSeen: now}
		a.studies[key] = st
	}
	dup, stale := a.addLocked(st, inst)
	if !dup {
		st.complete = false
	}
	st.lastChange = now
	a.mu.Unlock()
	if stale != "" && stale != inst.Path {
		if err := a.cfg.Store.Remove(stale); err != nil {
			a.log.Error("removing the old copy of a re-sent instance", "path", stale, "err", err, obs.Correlation(obs.StudyCorrelationID(calledAE, inst.StudyInstanceUID)))
		}
	}
	if isNew {
		a.log.Info("study receiving", "called_ae", calledAE, "calling_ae", callingAE, "study", inst.StudyInstanceUID, obs.Correlation(obs.StudyCorrelationID(calledAE, inst.StudyInstanceUID)))
		// Record the called AE as sent (the directory name is sanitised) for a later rebuild.
		a.writeState(st.dir, stateFile{CalledAE: calledAE, CallingAE: callingAE, StudyInstanceUID: inst.StudyInstanceUID})
	}
	a.poke()
}

func (a *Assembler) poke() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// writeState atomically and durably replaces study.json.
func (a *Assembler) writeState(dir string, sf stateFile) error {
	b, _ := json.MarshalIndent(sf, "", "  ")
	return dicomstd.WriteFileAtomic(filepath.Join(dir, stateFileName), b, 0o600)
}

// Run completes studies after their quiet window and hands them to the sink until ctx ends. It
// waits for running hand-offs before returning.
//
// It sleeps on one timer set to the earliest quiet-window deadline (last instance + QuietWindow)
// of the studies still receiving, and wakes early only when Add or a finished hand-off changes
// that picture: a study completes at its deadline, not at the next tick of a poll, and an idle
// gateway does no work at all.
func (a *Assembler) Run(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		var due <-chan time.Time
		if next, ok := a.scan(ctx); ok {
			// Since Go 1.23 Reset discards a pending expiry, so no stale tick can fire early.
			timer.Reset(time.Until(next))
			due = timer.C
		}
		select {
		case <-ctx.Done():
			a.wg.Wait()
			return
		case <-due:
		case <-a.wake:
		}
	}
}

// scan completes the studies whose quiet window has passed, starts the hand-offs that are due,
// and returns the earliest deadline of the studies still in their quiet window (ok false when
// there is none). A study being handed off is left to its hand-off, which pokes Run when it ends.
func (a *Assembler) scan(ctx context.Context) (next time.Time, ok bool) {
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, st := range a.studies {
		if st.handingOff {
			continue
		}
		if !st.complete {
			deadline := st.lastChange.Add(a.cfg.QuietWindow)
			if now.Before(deadline) {
				if !ok || deadline.Before(next) {
					next, ok = deadline, true
				}
				continue
			}
			st.complete = true
			st.completeAt = now
			a.log.Info("study complete", "called_ae", st.key.ae, "study", st.key.uid, "series", len(st.series), "instances", st.count(), obs.Correlation(obs.StudyCorrelationID(st.key.ae, st.key.uid)))
		}
		if st.handedOff != st.instanceKey() {
			st.handingOff = true
			a.wg.Add(1)
			go a.handOff(ctx, st, a.snapshotLocked(st))
		}
	}
	return next, ok
}

func (a *Assembler) snapshotLocked(st *study) CompletedStudy {
	cs := CompletedStudy{CalledAE: st.key.ae, CallingAE: st.callingAE, StudyInstanceUID: st.key.uid, Dir: st.dir, CompletedAt: st.completeAt, FirstReceivedAt: st.firstSeen}
	for _, se := range st.series {
		s := CompletedSeries{SeriesInstanceUID: se.uid, Modality: se.modality}
		for _, i := range se.instances {
			s.Instances = append(s.Instances, i)
		}
		sort.Slice(s.Instances, func(i, j int) bool { return s.Instances[i].SOPInstanceUID < s.Instances[j].SOPInstanceUID })
		cs.Series = append(cs.Series, s)
	}
	sort.Slice(cs.Series, func(i, j int) bool { return cs.Series[i].SeriesInstanceUID < cs.Series[j].SeriesInstanceUID })
	return cs
}

// handOff calls the sink until it accepts cs, the study changes, or ctx ends.
func (a *Assembler) handOff(ctx context.Context, st *study, cs CompletedStudy) {
	defer a.wg.Done()
	key := cs.InstanceSetKey()
	delay := a.cfg.RetryMin
	for {
		err := a.cfg.Sink.StudyComplete(ctx, cs)
		a.mu.Lock()
		st.attempts++
		if err == nil {
			st.handedOff = key
			st.lastError = ""
			n := st.count()
			a.mu.Unlock()
			if werr := a.writeState(cs.Dir, stateFile{CalledAE: cs.CalledAE, CallingAE: cs.CallingAE, StudyInstanceUID: cs.StudyInstanceUID, HandedOffSet: key, HandedOffCount: n, HandedOffAt: time.Now().UTC()}); werr != nil {
				// Not fatal: after a restart the study is simply handed off again (deduplicated
				// downstream by its instance-set key).
				a.log.Warn("recording hand-off", "study", cs.StudyInstanceUID, "err", werr, obs.Correlation(obs.StudyCorrelationID(cs.CalledAE, cs.StudyInstanceUID)))
			}
			a.log.Info("study handed off", "called_ae", cs.CalledAE, "study", cs.StudyInstanceUID, "instances", n, obs.Correlation(obs.StudyCorrelationID(cs.CalledAE, cs.StudyInstanceUID)))
			a.mu.Lock()
			st.handingOff = false
			a.mu.Unlock()
			a.poke() // the study may have gained instances meanwhile
			return
		}
		st.lastError = err.Error()
		changed := !st.complete
		a.mu.Unlock()
		if changed {
			a.mu.Lock()
			st.handingOff = false
			a.mu.Unlock()
			a.poke() // new instances arrived: Run times the larger set's quiet window
			return
		}
		a.log.Warn("study hand-off failed; retrying", "study", cs.StudyInstanceUID, "err", err, "retry_in", delay, obs.Correlation(obs.StudyCorrelationID(cs.CalledAE, cs.StudyInstanceUID)))
		select {
		case <-ctx.Done():
			a.mu.Lock()
			st.handingOff = false
			a.mu.Unlock()
			return
		case <-time.After(delay):
		}
		delay = min(delay*2, a.cfg.RetryMax)
	}
}

// SeriesInfo and StudyInfo are snapshots for the HTTP API.
type SeriesInfo struct {
	SeriesInstanceUID string
	Modality          string
	Instances         int
}

// StudyInfo is a snapshot of one study.
type StudyInfo struct {
	CalledAE, CallingAE, StudyInstanceUID string
	State                                 string
	HandedOff                             bool
	Instances                             int
	Series                                []SeriesInfo
	FirstReceived, LastReceived           time.Time
	CompletedAt                           time.Time
	LastError                             string
}

// Studies returns a snapshot of all studies, newest activity first.
func (a *Assembler) Studies() []StudyInfo {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]StudyInfo, 0, len(a.studies))
	for _, st := range a.studies {
		info := StudyInfo{CalledAE: st.key.ae, CallingAE: st.callingAE, StudyInstanceUID: st.key.uid, State: StateReceiving,
			Instances: st.count(), FirstReceived: st.firstSeen, LastReceived: st.lastChange, LastError: st.lastError}
		if st.complete {
			info.State = StateComplete
			info.CompletedAt = st.completeAt
			info.HandedOff = st.handedOff == st.instanceKey()
		}
		for _, se := range st.series {
			info.Series = append(info.Series, SeriesInfo{SeriesInstanceUID: se.uid, Modality: se.modality, Instances: len(se.instances)})
		}
		sort.Slice(info.Series, func(i, j int) bool { return info.Series[i].SeriesInstanceUID < info.Series[j].SeriesInstanceUID })
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].LastReceived.Equal(out[j].LastReceived) {
			return out[i].LastReceived.After(out[j].LastReceived)
		}
		return strings.Compare(out[i].StudyInstanceUID, out[j].StudyInstanceUID) < 0
	})
	return out
}
