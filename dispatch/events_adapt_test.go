package dispatch

import (
	"testing"
	"time"

	"dpersona/gateway/assembly"
)

// TestFromCompletedStudy: the event carries the study, its series and every instance's claim
// check, with the completion time in UTC.
func TestFromCompletedStudy(t *testing.T) {
	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.FixedZone("CET", 3600))
	ev := FromCompletedStudy(assembly.CompletedStudy{CalledAE: "DPERSONA", CallingAE: "CT1", StudyInstanceUID: "1.2.3", Dir: "/data/studies/x",
		CompletedAt: at, Series: []assembly.CompletedSeries{{SeriesInstanceUID: "1.2.3.1", Modality: "CT",
			Instances: []assembly.StoredInstance{{SOPInstanceUID: "1.2.3.1.1", SOPClassUID: "1.2.840.10008.5.1.4.1.1.2", Path: "/data/a.dcm", Size: 42}}}}})
	if ev.CalledAE != "DPERSONA" || ev.CallingAE != "CT1" || ev.StudyInstanceUID != "1.2.3" || ev.Dir != "/data/studies/x" || ev.CompletedAt.Location() != time.UTC || !ev.CompletedAt.Equal(at) {
		t.Fatalf("event = %+v", ev)
	}
	if len(ev.Series) != 1 || ev.Series[0].Modality != "CT" || len(ev.Series[0].Instances) != 1 {
		t.Fatalf("series = %+v", ev.Series)
	}
	if in := ev.Series[0].Instances[0]; in.SOPInstanceUID != "1.2.3.1.1" || in.Path != "/data/a.dcm" || in.Size != 42 {
		t.Fatalf("instance = %+v", in)
	}
}

func TestNewExporterByKind(t *testing.T) {
	if e, ok := NewExporter(Destination{Name: "w", Kind: KindSTOW, URL: "http://x/dicom-web", BearerToken: "t"}, "DPERSONA").(*STOWExporter); !ok || e.URL != "http://x/dicom-web" || e.BearerToken != "t" {
		t.Fatalf("stow destination: %#v", e)
	}
	e, ok := NewExporter(Destination{Name: "p", Kind: KindDICOM, AETitle: "PACS", Host: "10.0.0.5", Port: 104}, "DPERSONA").(*CStoreExporter)
	if !ok || e.Addr != "10.0.0.5:104" || e.CalledAE != "PACS" || e.CallingAE != "DPERSONA" {
		t.Fatalf("dicom destination: %#v", e)
	}
}
