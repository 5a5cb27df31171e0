package gateway

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"testing"
	"time"

	"dpersona/gateway/scu"
	"dpersona/internal/obs"
	"dpersona/internal/testutil"
)

// DICOM TLS with client-certificate verification, against dcmtk's storescu/echoscu (OpenSSL) and
// the project's own SCU: a client with a certificate from the configured CA gets in, one without a
// certificate or with one from another CA is refused at the handshake, which is counted.
func TestDICOMTLSWithClientVerification(t *testing.T) {
	testutil.RequireTool(t, "storescu")
	pki := testutil.NewTLSFiles(t)
	cfg, err := ServerTLSConfig(pki.ServerCert, pki.ServerKey, pki.CA)
	if err != nil {
		t.Fatal(err)
	}
	g := startGateway(t, gatewayOptions{tls: cfg})
	port := fmt.Sprint(g.port)

	files := dicomFiles(t, testutil.Testdata("dicom", "ct2-pydicom"))
	out, err := runTool(t, 60*time.Second, "storescu", append([]string{"-v", "-R", "+tls", pki.ClientKey, pki.ClientCert, "+cf", pki.CA,
		"-aet", "TLSMOD", "-aec", "DPERSONA", "127.0.0.1", port}, files...)...)
	if err != nil {
		t.Fatalf("storescu over TLS failed: %v\n%s", err, out)
	}
	if n := strings.Count(out, "Received Store Response (Success)"); n != len(files) {
		t.Fatalf("storescu over TLS: %d successes for %d files:\n%s", n, len(files), out)
	}
	if got := len(storedFiles(t, g.dataDir)); got != len(files) {
		t.Fatalf("stored %d files, sent %d over TLS", got, len(files))
	}
	out, err = runTool(t, 20*time.Second, "echoscu", "-v", "+tls", pki.ClientKey, pki.ClientCert, "+cf", pki.CA, "-aet", "TLSMOD", "-aec", "DPERSONA", "127.0.0.1", port)
	if err != nil || !strings.Contains(out, "Received Echo Response (Success)") {
		t.Fatalf("echoscu over TLS: %v\n%s", err, out)
	}

	refused := []struct {
		name string
		args []string
	}{
		{"no client certificate", []string{"+tla", "+cf", pki.CA}},
		{"certificate from another CA", []string{"+tls", pki.UntrustedKey, pki.UntrustedCert, "+cf", pki.CA}},
		{"plain TCP", nil},
	}
	for _, c := range refused {
		t.Run(c.name, func(t *testing.T) {
			before := obs.RejectionsTotal.With(obs.RejectTLSHandshake).Value()
			args := append(append([]string{"-v"}, c.args...), "-to", "10", "-aet", "TLSMOD", "-aec", "DPERSONA", "127.0.0.1", port)
			out, err := runTool(t, 20*time.Second, "echoscu", args...)
			if err == nil || strings.Contains(out, "Received Echo Response (Success)") {
				t.Fatalf("echoscu with %s was let in:\n%s", c.name, out)
			}
			testutil.WaitFor(t, 5*time.Second, "the failed handshake counted", func() bool {
				return obs.RejectionsTotal.With(obs.RejectTLSHandshake).Value() > before
			})
		})
	}
	if !strings.Contains(g.logs.String(), "TLS handshake failed") {
		t.Fatalf("refused handshakes were not logged:\n%s", g.logs.String())
	}

	// The project's SCU (dpersona echo/send) speaks TLS too, and refuses TLS below 1.2.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ccfg, err := scu.ClientTLSConfig(pki.CA, pki.ClientCert, pki.ClientKey, "")
	if err != nil {
		t.Fatal(err)
	}
	c, err := scu.Dial(ctx, g.addr, scu.Options{CallingAE: "TLSSCU", CalledAE: "DPERSONA", TLS: ccfg}, scu.VerificationProposal())
	if err != nil {
		t.Fatalf("scu over TLS: %v", err)
	}
	if err := c.Echo(ctx); err != nil {
		t.Fatalf("C-ECHO over TLS: %v", err)
	}
	if err := c.Release(); err != nil {
		t.Fatal(err)
	}
	old := ccfg.Clone()
	old.MaxVersion = tls.VersionTLS11
	if _, err := scu.Dial(ctx, g.addr, scu.Options{CallingAE: "TLSSCU", CalledAE: "DPERSONA", TLS: old}, scu.VerificationProposal()); err == nil {
		t.Fatal("a TLS 1.1 client was accepted")
	}
	noCert, _ := scu.ClientTLSConfig(pki.CA, "", "", "")
	if _, err := scu.Dial(ctx, g.addr, scu.Options{CallingAE: "TLSSCU", CalledAE: "DPERSONA", TLS: noCert}, scu.VerificationProposal()); err == nil {
		t.Fatal("scu without a client certificate was accepted")
	}
}

// Without a client CA the TLS listener encrypts but accepts any client (the AE allow-list gates).
func TestDICOMTLSWithoutClientVerification(t *testing.T) {
	testutil.RequireTool(t, "echoscu")
	pki := testutil.NewTLSFiles(t)
	cfg, err := ServerTLSConfig(pki.ServerCert, pki.ServerKey, "")
	if err != nil {
		t.Fatal(err)
	}
	g := startGateway(t, gatewayOptions{tls: cfg})
	out, err := runTool(t, 20*time.Second, "echoscu", "-v", "+tla", "+cf", pki.CA, "-aet", "ANON", "-aec", "DPERSONA", "127.0.0.1", fmt.Sprint(g.port))
	if err != nil || !strings.Contains(out, "Received Echo Response (Success)") {
		t.Fatalf("anonymous TLS client refused without client verification: %v\n%s", err, out)
	}
	if _, err := ServerTLSConfig(pki.ServerCert, "", ""); err == nil {
		t.Fatal("a TLS configuration without key was accepted")
	}
	if _, err := ServerTLSConfig(pki.ServerCert, pki.ServerKey, pki.ServerKey); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Fatalf("a CA file without certificates: %v", err)
	}
}
