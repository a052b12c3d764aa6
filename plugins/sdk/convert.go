package sdk

import (
	"encoding/json"
	"fmt"
	"time"

	pb "github.com/lockstep-io/lockstep/plugins/proto/lockstep/plugin/v1"
)

// MaxEvidence is the largest evidence, as JSON, that travels to the host.
const MaxEvidence = 64 << 10

// valueToProto converts one Config value.
func valueToProto(v any) (*pb.Value, error) {
	switch x := v.(type) {
	case string:
		return &pb.Value{Kind: &pb.Value_String_{String_: x}}, nil
	case []string:
		return &pb.Value{Kind: &pb.Value_StringList{StringList: &pb.StringList{Values: x}}}, nil
	case time.Duration:
		return &pb.Value{Kind: &pb.Value_DurationNanos{DurationNanos: int64(x)}}, nil
	case int64:
		return &pb.Value{Kind: &pb.Value_Number{Number: x}}, nil
	case int:
		return &pb.Value{Kind: &pb.Value_Number{Number: int64(x)}}, nil
	case bool:
		return &pb.Value{Kind: &pb.Value_Bool{Bool: x}}, nil
	default:
		return nil, fmt.Errorf("sdk: config value of type %T: want string, []string, time.Duration, int64 or bool", v)
	}
}

// valueFromProto converts one Value; nil for an unset one.
func valueFromProto(v *pb.Value) any {
	switch x := v.GetKind().(type) {
	case *pb.Value_String_:
		return x.String_
	case *pb.Value_StringList:
		return append([]string{}, x.StringList.GetValues()...)
	case *pb.Value_DurationNanos:
		return time.Duration(x.DurationNanos)
	case *pb.Value_Number:
		return x.Number
	case *pb.Value_Bool:
		return x.Bool
	default:
		return nil
	}
}

func appToProto(a App) (*pb.App, error) {
	out := &pb.App{Service: a.Service, Name: a.Name, Volumes: a.Volumes, Config: map[string]*pb.Value{}}
	for k, v := range a.Config {
		pv, err := valueToProto(v)
		if err != nil {
			return nil, fmt.Errorf("app %q attribute %q: %w", a.Name, k, err)
		}
		out.Config[k] = pv
	}
	return out, nil
}

func appFromProto(a *pb.App) App {
	out := App{Service: a.GetService(), Name: a.GetName(), Volumes: a.GetVolumes(), Config: Config{}}
	for k, v := range a.GetConfig() {
		if x := valueFromProto(v); x != nil {
			out.Config[k] = x
		}
	}
	return out
}

func schemaToProto(s Schema) (*pb.ConfigSchemaResponse, error) {
	out := &pb.ConfigSchemaResponse{Doc: s.Doc}
	for _, a := range s.Attributes {
		pa := &pb.Attribute{
			Name: a.Name, Type: string(a.Type), Required: a.Required, OneOf: a.OneOf,
			Absolute: a.Absolute, NonEmpty: a.NonEmpty, Doc: a.Doc,
		}
		if a.Default != nil {
			d, err := valueToProto(a.Default)
			if err != nil {
				return nil, fmt.Errorf("default of attribute %q: %w", a.Name, err)
			}
			pa.Default = d
		}
		out.Attributes = append(out.Attributes, pa)
	}
	return out, nil
}

func schemaFromProto(s *pb.ConfigSchemaResponse) Schema {
	out := Schema{Doc: s.GetDoc()}
	for _, a := range s.GetAttributes() {
		out.Attributes = append(out.Attributes, Attribute{
			Name: a.GetName(), Type: Type(a.GetType()), Required: a.GetRequired(),
			Default: valueFromProto(a.GetDefault()), OneOf: a.GetOneOf(),
			Absolute: a.GetAbsolute(), NonEmpty: a.GetNonEmpty(), Doc: a.GetDoc(),
		})
	}
	return out
}

// encodeEvidence marshals evidence and enforces MaxEvidence.
func encodeEvidence(ev Evidence) ([]byte, error) {
	if ev == nil {
		ev = Evidence{}
	}
	b, err := json.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("sdk: evidence is not JSON: %w", err)
	}
	if len(b) > MaxEvidence {
		return nil, fmt.Errorf("%w: %d bytes, the limit is %d", ErrEvidenceTooLarge, len(b), MaxEvidence)
	}
	return b, nil
}

func decodeEvidence(b []byte) (Evidence, error) {
	if len(b) > MaxEvidence {
		return nil, fmt.Errorf("%w: %d bytes, the limit is %d", ErrEvidenceTooLarge, len(b), MaxEvidence)
	}
	ev := Evidence{}
	if len(b) == 0 {
		return ev, nil
	}
	if err := json.Unmarshal(b, &ev); err != nil {
		return nil, fmt.Errorf("sdk: evidence is not a JSON object: %w", err)
	}
	return ev, nil
}
