package main

import (
	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// subcommands are registered by the files of this package, one file per command, so that
// commands can be added without touching the root.
var subcommands []func() *cobra.Command

func registerCommand(f func() *cobra.Command) { subcommands = append(subcommands, f) }

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "dpersona",
		Short:         "DICOM gateway serving D-Persona multi-rater segmentation",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	for _, f := range subcommands {
		root.AddCommand(f())
	}
	return root
}
