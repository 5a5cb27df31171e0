package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"dpersona/gateway/pdu"
	"dpersona/gateway/scu"
	"dpersona/internal/dicomstd"
)

func init() { registerCommand(newEchoCommand) }

// parseDestination splits "AET@HOST:PORT" into the AE title and the address to dial.
func parseDestination(s string) (ae, addr string, err error) {
	a, err := dicomstd.ParseAddress(s)
	if err != nil {
		return "", "", fmt.Errorf("destination %q: %w", s, err)
	}
	return a.AETitle, a.HostPort(), nil
}

// explainDialError adds what an operator should check to an association failure.
func explainDialError(err error) error {
	var rj pdu.AssociateRJ
	if errors.As(err, &rj) {
		switch rj.Reason {
		case pdu.RejectReasonCalledAENotRecognized:
			return fmt.Errorf("%w (check the AE title before the @)", err)
		case pdu.RejectReasonCallingAENotRecognized:
			return fmt.Errorf("%w (ask the peer to allow this calling AE, see --aet, and this host)", err)
		}
	}
	return err
}

// scuTLSFlags are the DICOM TLS options of the SCU commands (echo, send).
type scuTLSFlags struct {
	enable        bool
	ca, cert, key string
	serverName    string
}

func (f *scuTLSFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.BoolVar(&f.enable, "tls", false, "use DICOM TLS (TLS 1.2+); implied by --tls-ca and --tls-cert")
	fl.StringVar(&f.ca, "tls-ca", "", "PEM CA file to verify the peer's certificate (default: system roots)")
	fl.StringVar(&f.cert, "tls-cert", "", "PEM client certificate, for peers that verify clients")
	fl.StringVar(&f.key, "tls-key", "", "PEM private key of --tls-cert")
	fl.StringVar(&f.serverName, "tls-server-name", "", "name to verify in the peer's certificate (default: the host of the destination)")
}

// config returns nil when TLS is not asked for.
func (f *scuTLSFlags) config() (*tls.Config, error) {
	if !f.enable && f.ca == "" && f.cert == "" && f.key == "" {
		return nil, nil
	}
	return scu.ClientTLSConfig(f.ca, f.cert, f.key, f.serverName)
}

func newEchoCommand() *cobra.Command {
	var tlsFlags scuTLSFlags
	var callingAE string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "echo AET@HOST:PORT",
		Short: "Check a DICOM peer with C-ECHO (verification)",
		Long: `echo opens an association to the peer, sends C-ECHO and releases, printing the round trip.
It exits non-zero when the peer cannot be reached, rejects the association or answers with a
failure status; the message says which.`,
		Example: "  dpersona echo PACS@10.0.0.5:104\n  dpersona echo --aet MYGATEWAY ORTHANC@127.0.0.1:4242",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ae, addr, err := parseDestination(args[0])
			if err != nil {
				return err
			}
			tlsCfg, err := tlsFlags.config()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			start := time.Now()
			c, err := scu.Dial(ctx, addr, scu.Options{CallingAE: callingAE, CalledAE: ae, DialTimeout: timeout, TLS: tlsCfg}, scu.VerificationProposal())
			if err != nil {
				return explainDialError(err)
			}
			if err := c.Echo(ctx); err != nil {
				c.Abort()
				return fmt.Errorf("C-ECHO to %s: %w", args[0], err)
			}
			rtt := time.Since(start)
			if err := c.Release(); err != nil {
				return fmt.Errorf("C-ECHO to %s succeeded but the release failed: %w", args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "C-ECHO %s: success (association and echo in %v, peer implementation %s %s)\n",
				args[0], rtt.Round(time.Millisecond), c.Association().PeerImplementationClassUID, c.Association().PeerImplementationVersion)
			return nil
		},
	}
	cmd.Flags().StringVar(&callingAE, "aet", "DPERSONA", "calling AE title")
	cmd.Flags().DurationVar(&timeout, "timeout", 15*time.Second, "overall deadline")
	tlsFlags.add(cmd)
	return cmd
}
