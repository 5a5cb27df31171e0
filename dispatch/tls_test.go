package dispatch

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"dpersona/internal/testutil"
)

// TestBusExternalServerWithTLSAndPassword: --nats-url to a nats-server that requires TLS and a
// user/password. The right settings work; a wrong password or an untrusted server certificate
// fail at once with the cause, instead of retrying for the whole connect deadline.
func TestBusExternalServerWithTLSAndPassword(t *testing.T) {
	pki := testutil.NewTLSFiles(t)
	ca, cert, key := pki.CA, pki.ServerCert, pki.ServerKey
	srv := startNATSProcess(t, filepath.Join(t.TempDir(), "js"), 0,
		"--tls", "--tlscert", cert, "--tlskey", key, "--user", "gateway", "--pass", "s3cret")
	url := strings.Replace(srv.URL(), "nats://", "tls://", 1)
	data := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	b, err := OpenBus(ctx, BusConfig{URL: url, TLSCAFile: ca, User: "gateway", Pass: "s3cret", DataDir: data}, testLogger(t))
	if err != nil {
		t.Fatalf("%v\nserver log:\n%s", err, srv.log())
	}
	defer b.Close()
	if err := b.EnsureTopology(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.PublishStudyComplete(ctx, sampleStudy(t, data, "TLS", "1.4", 1)); err != nil {
		t.Fatal(err)
	}
	if n := streamMsgs(t, b, StreamStudies); n != 1 {
		t.Fatalf("study stream holds %d messages", n)
	}

	start := time.Now()
	_, err = OpenBus(ctx, BusConfig{URL: url, TLSCAFile: ca, User: "gateway", Pass: "wrong", DataDir: data}, testLogger(t))
	if err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("wrong password: err = %v", err)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Fatalf("wrong password took %v to be reported", el)
	}
	otherCA := testutil.NewTLSFiles(t).CA // a second, unrelated CA
	_, err = OpenBus(ctx, BusConfig{URL: url, TLSCAFile: otherCA, User: "gateway", Pass: "s3cret", DataDir: data}, testLogger(t))
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("untrusted server certificate: err = %v", err)
	}
	if _, err := OpenBus(ctx, BusConfig{URL: url, TLSCAFile: filepath.Join(t.TempDir(), "missing.pem")}, testLogger(t)); err == nil || !strings.Contains(err.Error(), "missing.pem") {
		t.Fatalf("missing CA file: err = %v", err)
	}
}
