package dicomstd_test

import (
	"fmt"

	"dpersona/internal/dicomstd"
)

// A UID with a leading-zero component is not a UID (PS3.5 9.1), but it is still safe as a file
// name; a path-like string is neither.
func ExampleValidUID() {
	for _, uid := range []string{"1.2.840.10008.5.1.4.1.1.2", "1.2.05.3", "../etc"} {
		fmt.Printf("%-26s valid %-5v safe as a path %v\n", uid, dicomstd.ValidUID(uid), dicomstd.SafePathUID(uid))
	}
	// Output:
	// 1.2.840.10008.5.1.4.1.1.2  valid true  safe as a path true
	// 1.2.05.3                   valid false safe as a path true
	// ../etc                     valid false safe as a path false
}

func ExampleParseAddress() {
	a, err := dicomstd.ParseAddress("PACS@[fd00::5]:11112")
	fmt.Println(a.AETitle, a.Host, a.Port, a.HostPort(), err)
	_, err = dicomstd.ParseAddress("A_VERY_LONG_AE_TITLE@pacs:104")
	fmt.Println(err)
	// Output:
	// PACS fd00::5 11112 [fd00::5]:11112 <nil>
	// AE title: "A_VERY_LONG_AE_TITLE" is longer than 16 characters
}

// The same name gives the same UID in every process and release.
func ExampleNameUID() {
	first := dicomstd.NameUID("dpersona-example/v1", "1.2.3")
	again := dicomstd.NameUID("dpersona-example/v1", "1.2.3")
	fmt.Println(first == again, dicomstd.ValidUID(first), first != dicomstd.NameUID("dpersona-example/v1", "1.2.4"))
	// Output:
	// true true true
}
