package restore

import (
	"context"

	"github.com/lockstep-io/lockstep/plugins/sdk"
)

// Service is what a restore needs to know of a service.
type Service struct {
	Name    string
	Volumes []string // engine volume names
	Apps    []App    // dependency order: every app after the apps it depends on
}

// App is one application of a service and the plugin that stops, starts
// and checks it.
type App struct {
	Plugin sdk.Plugin
	App    sdk.App
	// Volumes are the engine names of the volumes the app lives on, when
	// they differ from App.Volumes (policy names); a single-volume restore
	// stops the apps on that volume.
	Volumes []string
}

// Name is the app's name.
func (a App) Name() string { return a.App.Name }

// Services resolves a service by name, for Resume and Undo, which may run
// in a process that did not start the restore.
type Services interface {
	Service(ctx context.Context, name string) (Service, error)
}

// ServiceMap is a fixed set of services.
type ServiceMap map[string]Service

// Service implements Services.
func (m ServiceMap) Service(_ context.Context, name string) (Service, error) {
	s, ok := m[name]
	if !ok {
		return Service{}, errUnknownService(name)
	}
	return s, nil
}

type errUnknownService string

func (e errUnknownService) Error() string { return "restore: unknown service " + quote(string(e)) }

func appsOn(s Service, volume string) []App {
	var out []App
	for _, a := range s.Apps {
		vs := a.Volumes
		if len(vs) == 0 {
			vs = a.App.Volumes
		}
		for _, v := range vs {
			if v == volume {
				out = append(out, a)
				break
			}
		}
	}
	return out
}
