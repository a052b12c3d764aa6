package parse

import (
	"sort"
	"time"

	"github.com/lockstep-io/lockstep/policies/model"
)

// PluginSchemas finds the schema of the plugin-owned part of an app block.
// The host passes one in; Builtin is the default. Once plugins publish their
// schemas over gRPC, an implementation backed by the plugin loader replaces it.
type PluginSchemas interface {
	// AppSchema returns the schema of apps of the plugin called name. decl is
	// the policy's plugin block of that name, or nil when there is none.
	// ok is false when no schema is known for the plugin.
	AppSchema(name string, decl *model.Plugin) (schema *PluginSchema, ok bool)
	// Names lists the plugins available without a plugin block, for
	// "did you mean" suggestions and validation of source = "builtin".
	Names() []string
}

// PluginSchema describes the attributes a plugin accepts in an app block.
type PluginSchema struct {
	Plugin     string
	Doc        string
	Attributes []PluginAttr
}

// ValueType is the type of a plugin attribute.
type ValueType string

// Value types of plugin attributes, and the Go type each decodes to in
// model.App.Config.
const (
	String     ValueType = "string"       // string
	StringList ValueType = "list(string)" // []string
	Duration   ValueType = "duration"     // time.Duration
	Number     ValueType = "number"       // int64
	Bool       ValueType = "bool"         // bool
	// Secret must be written as env() or file(); a literal is an error.
	Secret ValueType = "secret" // model.Secret
	// Sensitive may be a literal or come from env()/file() (a DSN that may
	// hold a password); it is redacted either way.
	Sensitive ValueType = "sensitive string" // model.Secret
)

// PluginAttr is one attribute of a plugin's app body.
type PluginAttr struct {
	Name     string
	Type     ValueType
	Required bool
	Default  any      // of the Go type of Type; nil when none
	OneOf    []string // allowed values of a string
	Absolute bool     // a string or each list element must be an absolute path
	NonEmpty bool     // a string or list must not be empty
	Doc      string
}

// Builtin is the schema table of the plugins compiled into lockstep.
type Builtin struct{}

var _ PluginSchemas = Builtin{}

// AppSchema implements PluginSchemas. A plugin declared with a source other
// than "builtin" has no schema until plugins publish theirs.
func (Builtin) AppSchema(name string, decl *model.Plugin) (*PluginSchema, bool) {
	if decl != nil && !decl.Builtin() {
		return nil, false
	}
	s, ok := builtinSchemas[name]
	return s, ok
}

// Names implements PluginSchemas.
func (Builtin) Names() []string {
	names := make([]string, 0, len(builtinSchemas))
	for n := range builtinSchemas {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

var hostAttr = PluginAttr{Name: "host", Type: String, Doc: "Where the app runs; empty means the daemon's machine."}

var builtinSchemas = map[string]*PluginSchema{
	"postgres": {
		Plugin: "postgres",
		Doc:    "PostgreSQL: CHECKPOINT before the marker, then crash recovery from the atomic cut of all the service's volumes (no pg_backup_start); the evidence is the WAL flush LSN and timeline.",
		Attributes: []PluginAttr{
			{Name: "dsn", Type: Sensitive, Required: true, NonEmpty: true, Doc: "libpq connection string; may hold a password, so `env()` or `file()` are accepted."},
			{Name: "data_directory", Type: String, Absolute: true, Doc: "The cluster's data directory; needed for stop and start at restore."},
			{Name: "os_user", Type: String, Default: "postgres", NonEmpty: true, Doc: "The operating-system user that owns the cluster and runs pg_ctl."},
			{Name: "pg_ctl", Type: String, Absolute: true, Doc: "Path of pg_ctl; default: the one of the data directory's PG_VERSION under /usr/lib/postgresql, else the newest there."},
			{Name: "log_file", Type: String, Absolute: true, Doc: "Server log of a start by pg_ctl (`pg_ctl -l`); default `pg_ctl.log` in the data directory."},
			hostAttr,
		},
	},
	"mysql": {
		Plugin: "mysql",
		Doc:    "MySQL and MariaDB: FLUSH TABLES WITH READ LOCK held on a connection of its own around the marker; the evidence is the binlog position and GTID state.",
		Attributes: []PluginAttr{
			{Name: "dsn", Type: Sensitive, Required: true, NonEmpty: true, Doc: "Go MySQL DSN (`user@tcp(host:3306)/`); the user needs RELOAD (and BINLOG MONITOR or REPLICATION CLIENT for the binlog position)."},
			{Name: "password", Type: Secret, Doc: "The password of the DSN's user; replaces one in the DSN."},
			{Name: "stop", Type: StringList, Doc: "Command that stops the server, for restore (`[\"systemctl\", \"stop\", \"mariadb\"]`); it must succeed when the server is stopped."},
			{Name: "start", Type: StringList, Doc: "Command that starts the server after a restore; the plugin then waits until the server answers."},
			hostAttr,
		},
	},
	"mail": {
		Plugin: "mail",
		Doc:    "Postfix and Dovecot: pauses both at an instant when no message is being written (SIGSTOP, nothing moved or reconfigured); the evidence is the queue state.",
		Attributes: []PluginAttr{
			{Name: "postfix_config_directory", Type: String, Default: "/etc/postfix", Absolute: true, NonEmpty: true, Doc: "Postfix's configuration directory (`postfix -c`), for a non-default instance."},
			{Name: "postfix_queue_directory", Type: String, Default: "/var/spool/postfix", Absolute: true, NonEmpty: true, Doc: "Postfix's queue directory; its `pid/master.pid` names the instance's master."},
			{Name: "dovecot_config", Type: String, Default: "/etc/dovecot/dovecot.conf", Absolute: true, Doc: "Dovecot's configuration file (`dovecot -c`); empty when the server has no Dovecot."},
			{Name: "dovecot_base_directory", Type: String, Absolute: true, Doc: "Dovecot's base_dir, which holds `master.pid`; default: asked from `doveconf`."},
			{Name: "dovecot_mail_location", Type: String, Doc: "Dovecot's mail_location (`maildir:/var/vmail/%d/%n`); for mbox and dbox stores it names the files a delivery writes."},
			{Name: "smtp_address", Type: String, Default: "127.0.0.1:25", NonEmpty: true, Doc: "host:port of the SMTP listener, for the health check."},
			{Name: "imap_address", Type: String, Default: "127.0.0.1:143", NonEmpty: true, Doc: "host:port of the IMAP listener, for the health check."},
			{Name: "imap_user", Type: String, Doc: "IMAP user for the health check; empty checks the greeting only."},
			{Name: "imap_password", Type: Secret, Doc: "Password of `imap_user`."},
			{Name: "drain_timeout", Type: Duration, Default: 5 * time.Second, Doc: "How long Freeze looks for an instant when no message is being written before it fails (and leaves the server running)."},
			{Name: "host", Type: String, Doc: "Where the app runs; empty means the daemon's machine. The mail plugin supports only its own machine."},
		},
	},
	"fsfreeze": {
		Plugin: "fsfreeze",
		Doc:    "Freezes file systems with FIFREEZE/FITHAW around the marker; at restore, unmounts them, drops the host's cached blocks (BLKFLSBUF) and mounts them again.",
		Attributes: []PluginAttr{
			{Name: "mountpoints", Type: StringList, Required: true, NonEmpty: true, Absolute: true, Doc: "Mount points to freeze, in order (thawed in reverse); each must be a mount point."},
			{Name: "state_directory", Type: String, Absolute: true, Doc: "Where stop records what it unmounted, for start; default `lockstep-fsfreeze` in the system's temp directory. Must not be on one of the mount points."},
			hostAttr,
		},
	},
	"exec": {
		Plugin: "exec",
		Doc:    "Runs commands (argv lists, no shell) to freeze, thaw, check, stop and start an application; the freeze command's stdout, if a JSON object, is the evidence.",
		Attributes: []PluginAttr{
			{Name: "freeze", Type: StringList, Required: true, NonEmpty: true, Doc: "Command that quiesces the app; a JSON object on its stdout becomes the evidence."},
			{Name: "thaw", Type: StringList, Required: true, NonEmpty: true, Doc: "Command that resumes the app; it must succeed when the app is not frozen."},
			{Name: "health", Type: StringList, Doc: "Command that exits 0 when the app is healthy."},
			{Name: "stop", Type: StringList, Doc: "Command that stops the app, for restore; it must succeed when the app is stopped."},
			{Name: "start", Type: StringList, Doc: "Command that starts the app, for restore."},
			{Name: "timeout", Type: Duration, Default: 30 * time.Second, Doc: "Deadline of each command; at the deadline its process group is killed."},
			{Name: "on_error", Type: String, Default: "fail", OneOf: []string{"fail", "continue"}, Doc: "`fail` makes a failed command fail the call; `continue` records the failure and goes on."},
			hostAttr,
		},
	},
}
