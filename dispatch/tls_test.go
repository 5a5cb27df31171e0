package dispatch

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeTestPKI writes a CA and a server certificate for 127.0.0.1 (PEM files in dir).
func writeTestPKI(t *testing.T, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "dpersona test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	srvKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srvTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "nats"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, ca, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(srvKey)
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("server.pem", "CERTIFICATE", srvDER), write("server.key", "EC PRIVATE KEY", keyDER)
}

// TestBusExternalServerWithTLSAndPassword: --nats-url to a nats-server that requires TLS and a
// user/password. The right settings work; a wrong password or an untrusted server certificate
// fail at once with the cause, instead of retrying for the whole connect deadline.
func TestBusExternalServerWithTLSAndPassword(t *testing.T) {
	pki := t.TempDir()
	ca, cert, key := writeTestPKI(t, pki)
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
	otherCA, _, _ := writeTestPKI(t, t.TempDir())
	_, err = OpenBus(ctx, BusConfig{URL: url, TLSCAFile: otherCA, User: "gateway", Pass: "s3cret", DataDir: data}, testLogger(t))
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("untrusted server certificate: err = %v", err)
	}
	if _, err := OpenBus(ctx, BusConfig{URL: url, TLSCAFile: filepath.Join(pki, "missing.pem")}, testLogger(t)); err == nil || !strings.Contains(err.Error(), "missing.pem") {
		t.Fatalf("missing CA file: err = %v", err)
	}
}
