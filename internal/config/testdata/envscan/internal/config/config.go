// Package config is the synthetic tree's config: it reads DECLARED and
// UNDOCUMENTED through a parser, as the real one does.
package config

// Lookup reads one variable.
type Lookup func(key string) (string, bool)

type parser struct{ lookup Lookup }

func (p *parser) raw(name string) string {
	v, _ := p.lookup(name)
	return v
}

func (p *parser) str(name, def string) string {
	if v := p.raw(name); v != "" {
		return v
	}
	return def
}

const undocumented = "UNDOCUMENTED"

// Load reads the variables.
func Load(lookup Lookup) (string, string) {
	p := parser{lookup: lookup}
	return p.str("DECLARED", "a"), p.str(undocumented, "b")
}
