// Package dicomstd is the one home of the DICOM rules that every other package of dpersona needs:
// the identity this implementation announces (Implementation Class UID and version name), what a
// valid UID is and what UID is safe as a path component, UID generation, what a valid AE title is
// and how "AET@HOST:PORT" is read, which explicit VRs have a 4-byte length, the Part-10 file meta
// group encoding, and the one durable way to replace a file.
//
// It is a leaf: it imports only the standard library, so gateway, dicomio, dispatch and cmd can
// all use it without pulling in anything else. A rule that two packages need lives here and
// nowhere else; a rule that only one package needs stays in that package.
package dicomstd
