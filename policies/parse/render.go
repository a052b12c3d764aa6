package parse

import (
	"sort"
	"time"

	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/hclwrite"
	"github.com/zclconf/go-cty/cty"

	"github.com/lockstep-io/lockstep/policies/model"
)

// Render writes the effective policy in the policy language: every default
// filled in, every secret shown as "(redacted)". The output is valid HCL
// but not a valid policy, since secrets are gone.
func Render(p *model.Policy) []byte {
	f := hclwrite.NewEmptyFile()
	root := f.Body()
	comment(root, "Effective policy: defaults filled in, secrets redacted.")
	for _, pl := range p.Plugins {
		b := root.AppendNewBlock("plugin", []string{pl.Name}).Body()
		b.SetAttributeValue("source", cty.StringVal(pl.Source))
		if pl.SHA256 != "" {
			b.SetAttributeValue("sha256", cty.StringVal(pl.SHA256))
		}
		if pl.Version != "" {
			b.SetAttributeValue("version", cty.StringVal(pl.Version))
		}
	}
	for _, s := range p.Services {
		root.AppendNewline()
		sb := root.AppendNewBlock("service", []string{s.Name}).Body()
		for _, v := range s.Volumes {
			vb := sb.AppendNewBlock("volume", []string{v.Name}).Body()
			vb.SetAttributeValue("size", cty.StringVal(formatSize(v.Size)))
			vb.SetAttributeValue("block_size", cty.NumberIntVal(int64(v.BlockSize)))
			vb.SetAttributeValue("target_name", cty.StringVal(v.TargetName))
			vb.SetAttributeValue("initiators", stringList(v.Initiators))
			if c := v.CHAP; c != nil {
				cb := vb.AppendNewBlock("chap", nil).Body()
				cb.SetAttributeValue("username", cty.StringVal(c.Username))
				cb.SetAttributeValue("secret", cty.StringVal(model.Redacted))
				if c.MutualUsername != "" {
					cb.SetAttributeValue("mutual_username", cty.StringVal(c.MutualUsername))
					cb.SetAttributeValue("mutual_secret", cty.StringVal(model.Redacted))
				}
			}
		}
		for _, a := range s.Apps {
			ab := sb.AppendNewBlock("app", []string{a.Plugin, a.Name}).Body()
			ab.SetAttributeValue("volumes", stringList(a.Volumes))
			ab.SetAttributeValue("depends_on", stringList(a.DependsOn))
			keys := make([]string, 0, len(a.Config))
			for k := range a.Config {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				ab.SetAttributeValue(k, configValue(a.Config[k]))
			}
		}
		c := s.Consistency
		cb := sb.AppendNewBlock("consistency", nil).Body()
		if c.Schedule != "" {
			cb.SetAttributeValue("schedule", cty.StringVal(c.Schedule))
		} else {
			cb.SetAttributeValue("every", duration(c.Every))
		}
		cb.SetAttributeValue("quiesce_timeout", duration(c.QuiesceTimeout))
		cb.SetAttributeValue("on_quiesce_failure", cty.StringVal(string(c.OnQuiesceFailure)))
		comment(cb, "Longest gap between two markers: "+model.FormatDuration(c.MaxGap)+".")
		sb.AppendNewBlock("rpo", nil).Body().SetAttributeValue("journal", duration(s.RPO.Journal))
		r := s.Retention
		rb := sb.AppendNewBlock("retention", nil).Body()
		rb.SetAttributeValue("journal", duration(r.Journal))
		for _, kv := range []struct {
			k string
			v int
		}{{"keep_hourly", r.KeepHourly}, {"keep_daily", r.KeepDaily}, {"keep_weekly", r.KeepWeekly}, {"keep_monthly", r.KeepMonthly}, {"keep_yearly", r.KeepYearly}} {
			rb.SetAttributeValue(kv.k, cty.NumberIntVal(int64(kv.v)))
		}
	}
	return hclwrite.Format(f.Bytes())
}

func comment(b *hclwrite.Body, text string) {
	b.AppendUnstructuredTokens(hclwrite.Tokens{
		{Type: hclsyntax.TokenComment, Bytes: []byte("# " + text + "\n")},
	})
}

func stringList(list []string) cty.Value {
	if len(list) == 0 {
		return cty.ListValEmpty(cty.String)
	}
	vals := make([]cty.Value, len(list))
	for i, s := range list {
		vals[i] = cty.StringVal(s)
	}
	return cty.ListVal(vals)
}

func duration(d time.Duration) cty.Value { return cty.StringVal(model.FormatDuration(d)) }

func configValue(v any) cty.Value {
	switch v := v.(type) {
	case string:
		return cty.StringVal(v)
	case []string:
		return stringList(v)
	case time.Duration:
		return duration(v)
	case int64:
		return cty.NumberIntVal(v)
	case bool:
		return cty.BoolVal(v)
	default: // model.Secret, and anything this renderer does not know
		return cty.StringVal(model.Redacted)
	}
}
