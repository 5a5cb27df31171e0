package testutil

import (
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
	"testing"
	"time"
)

// TLSFiles are PEM files of a throwaway PKI made by NewTLSFiles: a CA, a server certificate for
// 127.0.0.1/localhost and a client certificate, both signed by the CA, and a client certificate
// from an unrelated CA (which a verifying server must refuse).
type TLSFiles struct {
	CA                          string
	ServerCert, ServerKey       string
	ClientCert, ClientKey       string
	UntrustedCert, UntrustedKey string
}

// NewTLSFiles generates the PKI with crypto/x509 (ECDSA P-256, valid for a day) into t.TempDir().
func NewTLSFiles(t testing.TB) TLSFiles {
	t.Helper()
	dir := t.TempDir()
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	serial := int64(1)
	issue := func(tmpl *x509.Certificate, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey, []byte, []byte) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		serial++
		tmpl.SerialNumber = big.NewInt(serial)
		tmpl.NotBefore = time.Now().Add(-time.Hour)
		tmpl.NotAfter = time.Now().Add(24 * time.Hour)
		if parent == nil {
			parent, parentKey = tmpl, key
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		return cert, key, der, keyDER
	}
	caTmpl := func(cn string) *x509.Certificate {
		return &x509.Certificate{Subject: pkix.Name{CommonName: cn}, IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature}
	}
	leaf := func(cn string, usage x509.ExtKeyUsage) *x509.Certificate {
		return &x509.Certificate{Subject: pkix.Name{CommonName: cn}, KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	}
	ca, caKey, caDER, _ := issue(caTmpl("dpersona test CA"), nil, nil)
	_, _, srvDER, srvKey := issue(leaf("dpersona test server", x509.ExtKeyUsageServerAuth), ca, caKey)
	_, _, cliDER, cliKey := issue(leaf("dpersona test client", x509.ExtKeyUsageClientAuth), ca, caKey)
	other, otherKey, _, _ := issue(caTmpl("unrelated CA"), nil, nil)
	_, _, badDER, badKey := issue(leaf("untrusted client", x509.ExtKeyUsageClientAuth), other, otherKey)
	return TLSFiles{
		CA:         write("ca.pem", "CERTIFICATE", caDER),
		ServerCert: write("server.pem", "CERTIFICATE", srvDER), ServerKey: write("server.key", "PRIVATE KEY", srvKey),
		ClientCert: write("client.pem", "CERTIFICATE", cliDER), ClientKey: write("client.key", "PRIVATE KEY", cliKey),
		UntrustedCert: write("untrusted.pem", "CERTIFICATE", badDER), UntrustedKey: write("untrusted.key", "PRIVATE KEY", badKey),
	}
}
