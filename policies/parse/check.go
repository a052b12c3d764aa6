package parse

import (
	"fmt"
	"slices"
	"strings"

	"github.com/lockstep-io/lockstep/policies/model"
)

// checkServices runs the checks that need a whole service or all of them.
func (d *decoder) checkServices() {
	owner := map[string]string{} // volume name -> a service that has it
	targets := map[string]*volumeDecl{}
	for _, s := range d.services {
		for _, v := range s.volumes {
			if _, ok := owner[v.m.Name]; !ok {
				owner[v.m.Name] = s.m.Name
			}
			key := strings.ToLower(v.m.TargetName)
			if prev, dup := targets[key]; dup {
				d.errorf(v.target, "Duplicate iSCSI target name", "Volume %q would be served as %q, which volume %q (declared at %s) already uses. Rename one, or set target_name on it.", v.m.Name, v.m.TargetName, prev.m.Name, where(prev.block.DefRange))
				continue
			}
			targets[key] = v
		}
	}
	for _, s := range d.services {
		d.checkService(s, owner)
	}
}

func (d *decoder) checkService(s *serviceDecl, owner map[string]string) {
	if len(s.volumes) == 0 {
		d.errorf(s.block.DefRange, "Service without volumes", "Service %q has no volume blocks; a service protects at least one volume.", s.m.Name)
	}
	if len(s.apps) == 0 && len(s.volumes) > 0 {
		d.warnf(s.block.DefRange, "No applications", "Service %q has no app blocks: its markers will be crash-consistent only, never application-consistent.", s.m.Name)
	}
	volumeNames := make([]string, len(s.volumes))
	for i, v := range s.volumes {
		volumeNames[i] = v.m.Name
	}
	appNames := make([]string, len(s.apps))
	for i, a := range s.apps {
		appNames[i] = a.m.Name
	}
	for _, a := range s.apps {
		for i, name := range a.m.Volumes {
			if s.m.Volume(name) != nil || i >= len(a.volumes) {
				continue
			}
			if other, ok := owner[name]; ok {
				d.errorf(a.volumes[i].rng, "Volume of another service", "App %q names volume %q, which belongs to service %q. A volume belongs to exactly one service; move the app or the volume so that they share one.", a.m.Name, name, other)
				continue
			}
			d.errorf(a.volumes[i].rng, "Unknown volume", "App %q names volume %q, but service %q has no such volume (it has %s).%s", a.m.Name, name, s.m.Name, quoteList(volumeNames), suggest(name, volumeNames))
		}
		for i, dep := range a.m.DependsOn {
			if i >= len(a.deps) {
				continue
			}
			switch {
			case dep == a.m.Name:
				d.errorf(a.deps[i].rng, "Dependency cycle", "App %q depends on itself.", a.m.Name)
			case !slices.Contains(appNames, dep):
				d.errorf(a.deps[i].rng, "Unknown app", "App %q depends on %q, but service %q has no app of that name (it has %s).%s", a.m.Name, dep, s.m.Name, quoteList(appNames), suggest(dep, appNames))
			}
		}
	}
	d.orderApps(s)
	d.checkRPO(s)
}

// orderApps puts the service's apps in dependency order (declaration order
// among independent ones) and reports cycles.
func (d *decoder) orderApps(s *serviceDecl) {
	byName := map[string]*appDecl{}
	for _, a := range s.apps {
		byName[a.m.Name] = a
	}
	const (
		unvisited = iota
		visiting
		done
	)
	state := map[string]int{}
	var order []*model.App
	var stack []string
	reported := false
	var visit func(a *appDecl)
	visit = func(a *appDecl) {
		state[a.m.Name] = visiting
		stack = append(stack, a.m.Name)
		for i, dep := range a.m.DependsOn {
			b := byName[dep]
			if b == nil || dep == a.m.Name { // reported in checkService
				continue
			}
			switch state[dep] {
			case unvisited:
				visit(b)
			case visiting:
				if !reported && i < len(a.deps) {
					start := 0
					for j, n := range stack {
						if n == dep {
							start = j
						}
					}
					cycle := append(append([]string{}, stack[start:]...), dep)
					d.errorf(a.deps[i].rng, "Dependency cycle", "The apps of service %q depend on each other in a cycle: %s. Remove one of the depends_on entries.", s.m.Name, strings.Join(cycle, " → "))
					reported = true
				}
			}
		}
		stack = stack[:len(stack)-1]
		state[a.m.Name] = done
		order = append(order, a.m)
	}
	for _, a := range s.apps {
		if state[a.m.Name] == unvisited {
			visit(a)
		}
	}
	s.m.Apps = order
}

// checkRPO compares the RPO with what the schedule can deliver and with the
// retention window.
func (d *decoder) checkRPO(s *serviceDecl) {
	c, rpo := s.m.Consistency, s.m.RPO.Journal
	if rpo == 0 {
		return // missing or invalid, reported already
	}
	if c.MaxGap > 0 {
		how := fmt.Sprintf("markers come every %s", model.FormatDuration(c.Every))
		if c.Schedule != "" {
			how = fmt.Sprintf("schedule %q leaves up to %s between markers", c.Schedule, model.FormatDuration(c.MaxGap))
		}
		switch {
		case rpo < c.MaxGap:
			d.errorf(s.rpo, "RPO shorter than the schedule can meet", "Service %q has rpo.journal = %q, but %s (%s): the newest marker will at times be older than the RPO. Take markers more often or raise the RPO to at least %s.", s.m.Name, model.FormatDuration(rpo), how, where(s.schedule), model.FormatDuration(c.MaxGap))
		case rpo < c.MaxGap+c.QuiesceTimeout:
			d.warnf(s.rpo, "RPO without margin", "Service %q has rpo.journal = %q and %s; a marker that takes its full quiesce_timeout (%s) will breach the RPO.", s.m.Name, model.FormatDuration(rpo), how, model.FormatDuration(c.QuiesceTimeout))
		}
	}
	if r := s.m.Retention.Journal; r > 0 && r < rpo {
		d.errorf(s.retain, "Retention shorter than the RPO", "Service %q keeps its journal for %s (retention.journal), less than its RPO of %s: the point the RPO promises would already be gone. Make retention.journal at least %s.", s.m.Name, model.FormatDuration(r), model.FormatDuration(rpo), model.FormatDuration(rpo))
	}
}
