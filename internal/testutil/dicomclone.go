package testutil

import (
	"bytes"
	"fmt"
	"os"
	"testing"
)

// SameLengthUID derives a UID of exactly len(uid) characters from uid and n, by replacing its
// last digits with n (zero-padded), so that a file can be rewritten in place without touching any
// element length. The result stays a valid UID as long as uid's last component has enough digits.
func SameLengthUID(uid string, n int) string {
	suffix := fmt.Sprintf("%d", n)
	last := len(uid)
	for last > 0 && uid[last-1] != '.' {
		last--
	}
	component := uid[last:]
	if len(suffix) >= len(component) {
		panic(fmt.Sprintf("SameLengthUID: last component of %s is too short for %d", uid, n))
	}
	// Keep the component's first digit (never zero in a valid UID) and pad n with zeros.
	padded := fmt.Sprintf("%0*s", len(component)-1, suffix)
	return uid[:last] + component[:1] + padded
}

// CloneDICOM writes src to dst with every occurrence of each key of replace (a UID) replaced by
// its value, which must have the same length: a copy of a real instance with fresh UIDs.
func CloneDICOM(t testing.TB, src, dst string, replace map[string]string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	for old, repl := range replace {
		if len(old) != len(repl) {
			t.Fatalf("CloneDICOM: %s and %s differ in length", old, repl)
		}
		if !bytes.Contains(b, []byte(old)) {
			t.Fatalf("CloneDICOM: %s does not contain %s", src, old)
		}
		b = bytes.ReplaceAll(b, []byte(old), []byte(repl))
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
