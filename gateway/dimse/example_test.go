package dimse_test

import (
	"fmt"

	"dpersona/gateway/dimse"
)

// What a requestor does with a C-STORE response status: its category says whether the instance
// is stored, Transient whether sending it again later may help.
func ExampleStatus() {
	for _, s := range []dimse.Status{0x0000, 0xB007, 0xA702, 0xA900, 0xC123, 0x0122, 0xFF00} {
		fmt.Printf("0x%04X %-8s transient=%-5v %s\n", s, s.Category(), s.Transient(), s.Text())
	}
	// Output:
	// 0x0000 success  transient=false success
	// 0xB007 warning  transient=false warning: data set does not match SOP class
	// 0xA702 failure  transient=true  refused: out of resources
	// 0xA900 failure  transient=false error: data set does not match SOP class
	// 0xC123 failure  transient=false error: cannot understand
	// 0x0122 failure  transient=false refused: SOP class not supported
	// 0xFF00 pending  transient=false pending
}
