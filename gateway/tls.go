package gateway

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"dpersona/internal/dicomstd"
)

// ServerTLSConfig builds the TLS configuration of the DICOM TLS listener: TLS 1.2 or later (on
// 1.2 only the AEAD suites of dicomstd.TLSCipherSuites, BCP 195) with the server certificate
// chain and key from PEM files. With clientCAFile set, every peer must
// present a client certificate signed by one of the CAs in that PEM file (the handshake fails
// otherwise); without it, any peer may connect and the AE allow-list is the only gate.
func ServerTLSConfig(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("gateway: DICOM TLS needs both a certificate and a key file")
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("gateway: TLS certificate %s / key %s: %w", certFile, keyFile, err)
	}
	cfg := &tls.Config{MinVersion: dicomstd.TLSMinVersion, CipherSuites: dicomstd.TLSCipherSuites, Certificates: []tls.Certificate{cert}}
	if clientCAFile != "" {
		pool, err := LoadCertPool(clientCAFile)
		if err != nil {
			return nil, err
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// LoadCertPool reads the PEM certificates of a CA file into a pool, naming the file when it holds
// none.
func LoadCertPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("gateway: CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("gateway: CA file %s holds no PEM certificate", path)
	}
	return pool, nil
}
