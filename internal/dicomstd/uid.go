package dicomstd

import (
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"math/big"
	"strings"
)

// ImplementationClassUID identifies dpersona wherever DICOM asks for an implementation: the
// A-ASSOCIATE user information (PS3.7 D.3.3.2) and the Part-10 file meta group (0002,0012) of
// every file the gateway stores and every object dicomio writes.
//
// The project has no registered organisational root, so its UIDs live under 2.25 (PS3.5 B.2, a
// UUID in decimal). Earlier releases announced two values: this one from the network face and
// stored files, and 2.25.22047542288229317557698361293253583582 in the SEG files dicomio wrote.
// Peers and archives have seen this one on every association and every received instance, so it
// is the one kept; a file written by an older dicomio still reads fine (the class UID is only
// informative).
const ImplementationClassUID = "2.25.255036937218049958740476823424315904937"

// ImplementationVersionName goes with ImplementationClassUID (SH, at most 16 characters).
const ImplementationVersionName = "DPERSONA_1"

// MaxUIDLength is the longest UID value (PS3.5 9.1).
const MaxUIDLength = 64

// ValidUID reports whether s is a UID as PS3.5 9.1 defines it: 1 to 64 characters, components of
// digits separated by single dots, and no component with a leading zero ("0" alone is allowed).
// Use it to decide whether a UID may be written into an object or trusted as a UID.
func ValidUID(s string) bool {
	if len(s) == 0 || len(s) > MaxUIDLength {
		return false
	}
	start := 0 // index of the current component's first character
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == '.' {
			if i == start {
				return false // empty component: leading, trailing or doubled dot
			}
			if s[start] == '0' && i-start > 1 {
				return false // leading zero
			}
			start = i + 1
			continue
		}
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// SafePathUID reports whether s can be used as one file or directory name: 1 to 64 characters,
// digits and single dots, starting and ending with a digit. It is weaker than ValidUID (a
// component may have a leading zero, which some senders write) but no such name can be ".", "..",
// hidden, or contain a separator. Use it where a UID becomes part of a path; use ValidUID to
// judge the UID itself.
func SafePathUID(s string) bool {
	if len(s) == 0 || len(s) > MaxUIDLength {
		return false
	}
	prevDot := true
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '.':
			if prevDot {
				return false
			}
			prevDot = true
		case c >= '0' && c <= '9':
			prevDot = false
		default:
			return false
		}
	}
	return !prevDot
}

// LoggableUID returns s when it can only be a UID-like value (digits and dots, at most 64
// characters: SafePathUID), and otherwise a description without its content: a UID field can
// hold anything a sender put there, a patient's name included, and logs must never carry that.
func LoggableUID(s string) string {
	if SafePathUID(s) {
		return s
	}
	return fmt.Sprintf("<not a UID: %d bytes>", len(s))
}

// NewUID returns a new globally unique UID of the form 2.25.<random 128-bit UUID in decimal>
// (PS3.5 B.2): at most 44 characters, no leading zeros, so ValidUID holds for it.
func NewUID() string {
	var u [16]byte
	if _, err := rand.Read(u[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	u[6] = u[6]&0x0f | 0x40 // version 4
	u[8] = u[8]&0x3f | 0x80 // RFC 4122 variant
	return "2.25." + new(big.Int).SetBytes(u[:]).String()
}

// NameUID returns the UID that a name always maps to: "2.25." and the first 128 bits of
// SHA-256(namespace, parts..., joined by NUL bytes) in decimal (at most 44 characters, no leading
// zeros). Use it where the same input must give the same UID in every process and every release
// (a stable output series, the tracking UID of a lesion without one): change the namespace, never
// the formula, when the meaning of the name changes.
func NameUID(namespace string, parts ...string) string {
	h := sha256.Sum256([]byte(strings.Join(append([]string{namespace}, parts...), "\x00")))
	return "2.25." + new(big.Int).SetBytes(h[:16]).String()
}
