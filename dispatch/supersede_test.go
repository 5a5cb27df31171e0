package dispatch

import (
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"dpersona/dicomio"
	"dpersona/gateway"
	"dpersona/internal/dicomstd"
	"dpersona/internal/testutil"
)

// versioningProcessor is the fixture processor plus what the pipeline does with a job's version:
// the outputs of one (source series, output) stay in one series, and with predecessors a real
// IOCM rejection note (dicomio.EncodeKOS) lists them.
type versioningProcessor struct {
	*fixtureProcessor
	mu   sync.Mutex
	jobs []Job
}

func (p *versioningProcessor) Process(ctx context.Context, job Job) ([]SEG, error) {
	p.mu.Lock()
	p.jobs = append(p.jobs, job)
	p.mu.Unlock()
	segs, err := p.fixtureProcessor.Process(ctx, job)
	if err != nil || len(job.Predecessors) == 0 {
		return segs, err
	}
	src, err := dicomio.LoadSeries(job.Files)
	if err != nil {
		return nil, err
	}
	var refs []dicomio.KOSReference
	for _, o := range job.Outputs {
		if pr, ok := job.Predecessors[o]; ok {
			refs = append(refs, dicomio.KOSReference{SeriesInstanceUID: orDefault(pr.SeriesInstanceUID, dicomstd.NewUID()), SOPClassUID: pr.SOPClassUID, SOPInstanceUID: pr.SOPInstanceUID})
		}
	}
	data, info, err := dicomio.EncodeKOS(src, dicomio.KOSDescription{Title: dicomio.RejectedForQualityReasons, References: refs,
		Equipment: dicomio.Equipment{Manufacturer: "dpersona", ManufacturerModelName: "test", DeviceSerialNumber: "test", SoftwareVersions: "test"}})
	if err != nil {
		return nil, err
	}
	return append(segs, SEG{Output: OutputRejectionNote, SOPInstanceUID: info.SOPInstanceUID, SOPClassUID: dicomio.KeyObjectSelectionDocumentStorage,
		SeriesInstanceUID: info.SeriesInstanceUID, Segments: len(refs), Data: data}), nil
}

// recordingExporter accepts every file and records the SOP classes it was given.
type recordingExporter struct {
	mu      sync.Mutex
	classes map[string]int
}

func (r *recordingExporter) Export(ctx context.Context, files []ExportFile) ([]FileStatus, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]FileStatus, len(files))
	for i, f := range files {
		r.classes[f.SOPClassUID]++
		out[i] = FileStatus{Status: "0x0000"}
	}
	return out, nil
}

// TestLateInstancesSupersedeTheFirstResults: a study processed again after a late instance
// arrives gets version 2 of its results, each naming the object it replaces; the study state
// (GET /api/studies/{uid}) lists the superseded instances; the rejection note goes to Orthanc
// (configured for rejection notes, which stores it over C-STORE) and not to the archive that is
// not; a destination that refuses the Key Object Selection class keeps that reason while the
// SEG objects are still delivered to it.
func TestLateInstancesSupersedeTheFirstResults(t *testing.T) {
	orthanc := testutil.StartOrthanc(t, testutil.OrthancOptions{AET: "PACS"})
	strictAddr := pacsGateway(t, gateway.Config{Policy: gateway.Policy{AETitles: []string{"STRICT"}, DenySOPClasses: []string{dicomio.KeyObjectSelectionDocumentStorage}}})
	host, port, _ := strings.Cut(strictAddr, ":")
	strictPort, _ := strconv.Atoi(port)

	data := t.TempDir()
	b := openEmbedded(t, filepath.Join(data, "nats"), data, 0)
	defer b.Close()
	h := newHarness(t, b, data)
	pacs := Destination{Name: "pacs", Kind: KindDICOM, AETitle: "PACS", Host: "127.0.0.1", Port: orthanc.DICOMPort, RejectionNotes: true}
	strict := Destination{Name: "strict", Kind: KindDICOM, AETitle: "STRICT", Host: host, Port: strictPort, RejectionNotes: true}
	archive := Destination{Name: "archive", Kind: KindDICOM, AETitle: "ARCHIVE", Host: "127.0.0.1", Port: 1}
	routing := ctRoute(pacs.Name, strict.Name, archive.Name)
	routing.Destinations = []Destination{pacs, strict, archive}
	proc := &versioningProcessor{fixtureProcessor: newFixtureProcessor("w1")}
	h.infer(b, fastInfer(proc, routing))
	h.export(b, fastExport(pacs, NewCStoreExporter(pacs, "DPERSONA")))
	h.export(b, fastExport(strict, NewCStoreExporter(strict, "DPERSONA")))
	rec := &recordingExporter{classes: map[string]int{}}
	h.export(b, fastExport(archive, rec))
	h.mover(b)
	ctx := context.Background()

	// Version 1: the study with one of its two instances.
	full := ct2Study(t, data, "DPERSONA", ct2StudyUID)
	first := full
	first.Series = []SeriesRef{full.Series[0]}
	first.Series[0].Instances = full.Series[0].Instances[:1]
	if err := b.PublishStudyComplete(ctx, first); err != nil {
		t.Fatal(err)
	}
	v1 := waitState(t, b, "DPERSONA", ct2StudyUID, StateDone, 30*time.Second)
	if len(v1.Results) != 2 || v1.Results[0].Version != 1 || v1.Results[0].Replaces != nil || len(v1.Superseded) != 0 {
		t.Fatalf("version 1 results %+v superseded %+v", v1.Results, v1.Superseded)
	}

	// Version 2: the late instance arrived; the study is complete again with both.
	if err := b.PublishStudyComplete(ctx, full); err != nil {
		t.Fatal(err)
	}
	var v2 *StudyState
	testutil.WaitFor(t, 60*time.Second, "version 2 delivered", func() bool {
		st, err := b.StudyState(ctx, "DPERSONA", ct2StudyUID)
		if err != nil || len(st.Results) == 0 || st.Results[0].Version != 2 {
			return false
		}
		for _, r := range st.Results {
			for _, d := range r.Deliveries {
				if d.State == DeliveryPending || d.State == DeliveryRetrying {
					return false
				}
			}
		}
		v2 = st
		return true
	})
	old := map[string]ResultState{}
	for _, r := range v1.Results {
		old[r.Output] = r
	}
	var note *ResultState
	for i, r := range v2.Results {
		if r.Output == OutputRejectionNote {
			note = &v2.Results[i]
			continue
		}
		if r.Version != 2 || r.Replaces == nil || r.Replaces.SOPInstanceUID != old[r.Output].SOPInstanceUID || r.Replaces.ReplacedBy != r.SOPInstanceUID {
			t.Errorf("%s version 2: version %d replaces %+v, want %s", r.Output, r.Version, r.Replaces, old[r.Output].SOPInstanceUID)
		}
		for _, d := range r.Deliveries {
			if d.State != DeliveryDelivered {
				t.Errorf("%s to %s: %s %s (the SEG objects must reach every destination)", r.Output, d.Destination, d.State, d.Reason)
			}
		}
	}
	if len(v2.Superseded) != 2 {
		t.Fatalf("superseded %+v, want the 2 version-1 objects", v2.Superseded)
	}
	for _, s := range v2.Superseded {
		if old[s.Output].SOPInstanceUID != s.SOPInstanceUID || s.SOPClassUID != SOPClassSegmentation {
			t.Errorf("superseded %+v", s)
		}
	}
	if note == nil || note.SOPClassUID != dicomio.KeyObjectSelectionDocumentStorage {
		t.Fatalf("no rejection note among %+v", v2.Results)
	}
	byDest := map[string]DeliveryState{}
	for _, d := range note.Deliveries {
		byDest[d.Destination] = d
	}
	if len(note.Deliveries) != 2 || byDest["pacs"].State != DeliveryDelivered {
		t.Fatalf("rejection note deliveries %+v: want pacs delivered, strict refused, none to archive", note.Deliveries)
	}
	if d := byDest["strict"]; d.State != DeliveryFailed || !strings.Contains(d.Reason, dicomio.KeyObjectSelectionDocumentStorage) {
		t.Fatalf("strict destination: %+v, want failed naming the refused class", d)
	}
	if rec.classes[dicomio.KeyObjectSelectionDocumentStorage] != 0 || rec.classes[SOPClassSegmentation] != 4 {
		t.Fatalf("archive received %v: want the 4 SEG objects and no rejection note", rec.classes)
	}
	// Orthanc stored the rejection note.
	var tags map[string]any
	var ids []string
	if err := orthanc.GetJSON("/instances", &ids); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, id := range ids {
		if err := orthanc.GetJSON("/instances/"+id+"/simplified-tags", &tags); err == nil && tags["SOPInstanceUID"] == note.SOPInstanceUID {
			found = tags["SOPClassUID"] == dicomio.KeyObjectSelectionDocumentStorage && tags["Modality"] == "KO"
		}
	}
	if !found {
		t.Fatalf("Orthanc does not hold the rejection note %s as KO", note.SOPInstanceUID)
	}
	proc.mu.Lock()
	defer proc.mu.Unlock()
	if len(proc.jobs) != 2 || proc.jobs[1].Version != 2 || len(proc.jobs[1].Predecessors) != 2 {
		t.Fatalf("jobs %+v", proc.jobs)
	}
}
