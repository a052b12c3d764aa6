package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/lockstep-io/lockstep/plugins/builtin"
	"github.com/lockstep-io/lockstep/plugins/host"
	"github.com/lockstep-io/lockstep/plugins/sdk"
)

// pluginFlags are the flags of `lockstep plugin`; package level so that
// tests can reset them between runs.
var pluginFlags struct {
	dataDir, pluginDir, sha256 string
	asJSON                     bool
}

func init() {
	pc := &cobra.Command{
		Use:   "plugin",
		Short: "Install, list and remove application plugins",
		Long: `Manages the plugin directory (--plugin-dir, by default DATA/plugins where
DATA is --data or $LOCKSTEP_DATA). Each installed plugin is a binary and a
manifest recording its name, version, protocol and SHA-256; the binary is
checked against that checksum every time it is launched.`,
	}
	pc.PersistentFlags().StringVar(&pluginFlags.dataDir, "data", "", "data directory (default $LOCKSTEP_DATA)")
	pc.PersistentFlags().StringVar(&pluginFlags.pluginDir, "plugin-dir", "", "plugin directory (default DATA/plugins)")

	install := &cobra.Command{
		Use:   "install PATH [--sha256 SUM]",
		Short: "Install a plugin binary or a .tar.gz holding one",
		Long: `Copies the plugin at PATH (a binary, or a .tar.gz holding exactly one
executable) into the plugin directory, checks it against --sha256 when
given, starts it once to read its name and version, and refuses it if it
speaks another protocol than this lockstep. A plugin of the same name is
replaced.

Exit codes: 0 installed, 1 refused (checksum, protocol, not a plugin),
2 usage error.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := pluginManager()
			if err != nil {
				return err
			}
			man, err := m.Install(cmd.Context(), args[0], pluginFlags.sha256)
			if err != nil {
				return withExit(exitFailure, err)
			}
			if pluginFlags.asJSON {
				return printJSON(cmd.OutOrStdout(), man)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "installed %s %s (protocol %d, sha256 %s) in %s\n", man.Name, man.Version, man.Protocol, man.SHA256, m.Dir())
			return nil
		},
	}
	install.Flags().StringVar(&pluginFlags.sha256, "sha256", "", "expected SHA-256 of PATH (hex)")
	install.Flags().BoolVar(&pluginFlags.asJSON, "json", false, "print the manifest as JSON")

	list := &cobra.Command{
		Use:   "list [--json]",
		Short: "List installed plugins and the built-in ones",
		Long: `Lists the installed plugins with their versions and checksums, and the
plugins built into lockstep.

Exit codes: 0 listed, 1 the plugin directory is unreadable, 2 usage error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := pluginManager()
			if err != nil {
				return err
			}
			mans, err := m.List()
			if err != nil {
				return withExit(exitFailure, err)
			}
			if pluginFlags.asJSON {
				if mans == nil {
					mans = []host.Manifest{}
				}
				return printJSON(cmd.OutOrStdout(), map[string]any{"installed": mans, "builtin": builtin.Names()})
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tVERSION\tPROTOCOL\tSHA256\tHANDLES")
			for _, man := range mans {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%.12s\t%s\n", man.Name, man.Version, man.Protocol, man.SHA256, strings.Join(man.Handles, "; "))
			}
			for _, n := range builtin.Names() {
				fmt.Fprintf(tw, "%s\tbuiltin\t%d\t-\t\n", n, sdk.ProtocolVersion)
			}
			return tw.Flush()
		},
	}
	list.Flags().BoolVar(&pluginFlags.asJSON, "json", false, "print JSON")

	info := &cobra.Command{
		Use:   "info NAME [--json]",
		Short: "Show a plugin: an installed one's manifest, or a built-in's attributes",
		Long: `Shows the manifest of the installed plugin NAME or, for a plugin built into
lockstep (postgres, mysql, mail, fsfreeze, exec), its version and the
attributes its app blocks take, with their types, defaults and meaning.

Exit codes: 0 shown, 1 not installed, 2 usage error.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := pluginManager()
			if err != nil {
				return err
			}
			man, err := m.Info(args[0])
			if err != nil {
				if p, ok := builtin.Lookup(args[0]); ok {
					return writeBuiltinInfo(cmd, p, pluginFlags.asJSON)
				}
				return withExit(exitFailure, err)
			}
			if pluginFlags.asJSON {
				return printJSON(cmd.OutOrStdout(), man)
			}
			return writeManifest(cmd.OutOrStdout(), man)
		},
	}
	info.Flags().BoolVar(&pluginFlags.asJSON, "json", false, "print JSON")

	remove := &cobra.Command{
		Use:   "remove NAME",
		Short: "Remove an installed plugin",
		Long: `Removes the installed plugin NAME from the plugin directory. Policies that
use it stop validating.

Exit codes: 0 removed, 1 not installed, 2 usage error.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := pluginManager()
			if err != nil {
				return err
			}
			if err := m.Remove(args[0]); err != nil {
				return withExit(exitFailure, err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), "removed", args[0])
			return nil
		},
	}

	serve := &cobra.Command{
		Use:    "serve-builtin NAME",
		Short:  "Serve a built-in plugin to the host (started by lockstep itself)",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			p, ok := builtin.Lookup(args[0])
			if !ok {
				return withExit(exitUsage, fmt.Errorf("no built-in plugin %q; the built-ins are %s", args[0], strings.Join(builtin.Names(), ", ")))
			}
			sdk.Serve(p)
			return nil
		},
	}

	pc.AddCommand(install, list, info, remove, serve)
	rootCmd.AddCommand(pc)
}

// resolvePluginDir picks the plugin directory: pluginDir, else
// DATA/plugins with DATA from dataDir or $LOCKSTEP_DATA; "" when neither.
func resolvePluginDir(dataDir, pluginDir string) string {
	if pluginDir != "" {
		return pluginDir
	}
	if dataDir == "" {
		dataDir = os.Getenv("LOCKSTEP_DATA")
	}
	if dataDir == "" {
		return ""
	}
	return filepath.Join(dataDir, "plugins")
}

func pluginManager() (*host.Manager, error) {
	dir := resolvePluginDir(pluginFlags.dataDir, pluginFlags.pluginDir)
	if dir == "" {
		return nil, withExit(exitUsage, errors.New("--plugin-dir DIR or --data DIR is required (or set LOCKSTEP_DATA)"))
	}
	return host.NewManager(dir, host.Options{}), nil
}

func writeManifest(w io.Writer, man host.Manifest) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "name:\t%s\n", man.Name)
	fmt.Fprintf(tw, "version:\t%s\n", man.Version)
	fmt.Fprintf(tw, "protocol:\t%d\n", man.Protocol)
	fmt.Fprintf(tw, "sha256:\t%s\n", man.SHA256)
	fmt.Fprintf(tw, "handles:\t%s\n", strings.Join(man.Handles, "; "))
	fmt.Fprintf(tw, "binary:\t%s\n", man.Binary)
	fmt.Fprintf(tw, "installed:\t%s\n", man.InstalledAt.Format(time.RFC3339))
	return tw.Flush()
}

// writeBuiltinInfo shows a built-in plugin: what it says of itself and the
// schema of its app blocks, read in-process (neither touches an app).
func writeBuiltinInfo(cmd *cobra.Command, p sdk.Plugin, asJSON bool) error {
	ctx := cmd.Context()
	info, err := p.Info(ctx)
	if err != nil {
		return withExit(exitFailure, err)
	}
	schema, err := p.ConfigSchema(ctx)
	if err != nil {
		return withExit(exitFailure, err)
	}
	if asJSON {
		return printJSON(cmd.OutOrStdout(), map[string]any{
			"name": info.Name, "version": info.Version, "protocol": info.Protocol,
			"handles": info.Handles, "builtin": true, "schema": schema,
		})
	}
	w := cmd.OutOrStdout()
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "name:\t%s\n", info.Name)
	fmt.Fprintf(tw, "version:\t%s (built in)\n", info.Version)
	fmt.Fprintf(tw, "protocol:\t%d\n", info.Protocol)
	fmt.Fprintf(tw, "handles:\t%s\n", strings.Join(info.Handles, "; "))
	if err := tw.Flush(); err != nil {
		return err
	}
	if schema.Doc != "" {
		fmt.Fprintf(w, "\n%s\n", schema.Doc)
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ATTRIBUTE\tTYPE\tDEFAULT\tDESCRIPTION")
	for _, a := range schema.Attributes {
		def := "-"
		switch {
		case a.Required:
			def = "(required)"
		case a.Default != nil:
			def = fmt.Sprint(a.Default)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", a.Name, a.Type, def, a.Doc)
	}
	return tw.Flush()
}
