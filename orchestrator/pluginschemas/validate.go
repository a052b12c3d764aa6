package pluginschemas

import (
	"context"
	"fmt"

	"github.com/lockstep-io/lockstep/plugins/host"
	"github.com/lockstep-io/lockstep/plugins/sdk"
	"github.com/lockstep-io/lockstep/policies/model"
)

// AppProblem is one diagnostic a plugin's Validate returned for an app.
type AppProblem struct {
	Service, App, Plugin string
	Attribute            string // empty for the whole app
	Summary, Detail      string
}

// ValidateApps asks each declared (non-built-in) plugin to Validate the
// apps that use it: checks beyond the schema, such as a path that must
// exist. Built-ins are not asked here, since their checks may reach the
// application's servers. Errors are plugins that could not be asked.
func ValidateApps(ctx context.Context, p *model.Policy, m *host.Manager) ([]AppProblem, []error) {
	decls := map[string]*model.Plugin{}
	for _, d := range p.Plugins {
		if !d.Builtin() {
			decls[d.Name] = d
		}
	}
	clients := map[string]*host.Client{}
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	var probs []AppProblem
	var errs []error
	failed := map[string]bool{}
	for _, svc := range p.Services {
		for _, app := range svc.Apps {
			decl := decls[app.Plugin]
			if decl == nil || failed[app.Plugin] {
				continue
			}
			c := clients[app.Plugin]
			if c == nil {
				spec, err := resolve(m, decl)
				if err == nil {
					c, err = host.New(spec, host.Options{})
				}
				if err != nil {
					errs = append(errs, err)
					failed[app.Plugin] = true
					continue
				}
				clients[app.Plugin] = c
			}
			diags, err := c.Validate(ctx, SDKApp(svc, app))
			if err != nil {
				errs = append(errs, fmt.Errorf("app %q of service %q: %w", app.Name, svc.Name, err))
				continue
			}
			for _, d := range diags {
				probs = append(probs, AppProblem{Service: svc.Name, App: app.Name, Plugin: app.Plugin, Attribute: d.Attribute, Summary: d.Summary, Detail: d.Detail})
			}
		}
	}
	return probs, errs
}

// SDKApp is app as a plugin sees it: secrets revealed (the plugin needs
// them and must never log them), everything else as decoded.
func SDKApp(svc *model.Service, app *model.App) sdk.App {
	cfg := sdk.Config{}
	for k, v := range app.Config {
		if s, ok := v.(model.Secret); ok {
			v = s.Reveal()
		}
		cfg[k] = v
	}
	return sdk.App{Service: svc.Name, Name: app.Name, Volumes: app.Volumes, Config: cfg}
}
