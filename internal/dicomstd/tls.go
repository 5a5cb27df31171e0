package dicomstd

import "crypto/tls"

// TLSMinVersion and TLSCipherSuites are the DICOM TLS profile of dpersona, for both its SCP and
// its SCUs: PS3.15 B.9 (BCP 195 TLS Secure Transport Connection Profile) and BCP 195 (RFC 9325)
// itself. TLS 1.3 chooses its own (all AEAD) suites; on TLS 1.2 only AEAD suites with forward
// secrecy are offered (ECDHE with AES-GCM or ChaCha20-Poly1305): no CBC-SHA1 (Lucky 13 class),
// no static RSA key exchange. Every current DICOM toolkit (dcmtk/OpenSSL 1.1+, Orthanc, GDCM)
// offers these.
const TLSMinVersion = tls.VersionTLS12

// TLSCipherSuites: see TLSMinVersion.
var TLSCipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}
