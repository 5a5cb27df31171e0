package main

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"dpersona/internal/testutil"
)

// serve's DICOM TLS listener from flags, with client certificates required, used by the
// project's own echo and send (and refused without a client certificate).
func TestServeTLSListenerWithEchoAndSend(t *testing.T) {
	pki := testutil.NewTLSFiles(t)
	tlsPort := testutil.FreePort(t)
	p := startServe(t, t.TempDir(), "--quiet-window", "500ms", "--tls-listen", fmt.Sprintf("127.0.0.1:%d", tlsPort),
		"--tls-cert", pki.ServerCert, "--tls-key", pki.ServerKey, "--tls-client-ca", pki.CA)
	dest := fmt.Sprintf("DPERSONA@127.0.0.1:%d", tlsPort)
	run := func(args ...string) (string, error) {
		out, err := exec.Command(dpersonaBin, args...).CombinedOutput()
		return string(out), err
	}
	if out, err := run("echo", "--tls-ca", pki.CA, "--tls-cert", pki.ClientCert, "--tls-key", pki.ClientKey, dest); err != nil || !strings.Contains(out, "success") {
		t.Fatalf("echo over TLS: %v\n%s", err, out)
	}
	if out, err := run("echo", "--tls-ca", pki.CA, dest); err == nil {
		t.Fatalf("echo without a client certificate succeeded:\n%s", out)
	}
	if out, err := run("echo", dest); err == nil {
		t.Fatalf("plain echo on the TLS port succeeded:\n%s", out)
	}
	dir := testutil.Testdata("dicom", "ct2-pydicom")
	if out, err := run("send", "--to", dest, "--tls-ca", pki.CA, "--tls-cert", pki.ClientCert, "--tls-key", pki.ClientKey, dir); err != nil {
		t.Fatalf("send over TLS: %v\n%s", err, out)
	}
	study := fileInstance(t, testutil.Testdata("dicom", "ct2-pydicom", "17106")).StudyInstanceUID
	p.waitStudies(t, map[string]int{study: 4})
	if !strings.Contains(p.logs.String(), "DICOM TLS listener ready") || !strings.Contains(p.logs.String(), "TLS handshake failed") {
		t.Fatalf("TLS listener start or refused handshakes not logged:\n%s", p.logs.String())
	}
}
