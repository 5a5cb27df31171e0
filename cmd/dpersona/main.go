// Command dpersona is the one binary of the gateway: every role (ingest, inference, dispatch) and
// every operator tool is a sub-command chosen by flags, never a separate program.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "dpersona:", err)
		os.Exit(1)
	}
}
