package store

import "testing"

func TestAEDirNameIsReversibleAndSafe(t *testing.T) {
	for _, ae := range []string{"DPERSONA", "CT_SCANNER-1", "A B", "../..", ".", "..", "x/y", "50%", "lower"} {
		d := AEDirName(ae)
		if d == "." || d == ".." || d == "" {
			t.Fatalf("AEDirName(%q) = %q", ae, d)
		}
		for _, c := range d {
			if c == '/' || c == '.' {
				t.Fatalf("AEDirName(%q) = %q contains %q", ae, d, c)
			}
		}
		back, err := AEFromDirName(d)
		if err != nil || back != ae {
			t.Fatalf("AEFromDirName(%q) = %q, %v; want %q", d, back, err, ae)
		}
	}
	if AEDirName("A B") == AEDirName("A_B") {
		t.Fatal("distinct AE titles share a directory")
	}
	if _, err := AEFromDirName("bad%Z"); err == nil {
		t.Fatal("truncated escape decoded")
	}
}
