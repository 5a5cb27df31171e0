package dicomstd

// The uncompressed transfer syntaxes (PS3.5 annex A), defined once: part10, dicomio and the
// exporters name them from here. The compressed ones belong to dicomio, which decodes them.
const (
	// ImplicitVRLittleEndian is the default transfer syntax every DICOM implementation supports.
	ImplicitVRLittleEndian = "1.2.840.10008.1.2"
	// ExplicitVRLittleEndian is also the encoding of every file meta group (PS3.10 7.1).
	ExplicitVRLittleEndian = "1.2.840.10008.1.2.1"
	// DeflatedExplicitVRLittleEndian (PS3.5 A.5): the data set after the file meta group, in
	// explicit VR little endian, compressed with deflate (RFC 1951, no zlib header).
	// Segmentations are mostly zero bits: a 100 MB BINARY SEG deflates to a few hundred kilobytes.
	DeflatedExplicitVRLittleEndian = "1.2.840.10008.1.2.1.99"
	// ExplicitVRBigEndian is retired (PS3.5 A.3) but still read.
	ExplicitVRBigEndian = "1.2.840.10008.1.2.2"
)
