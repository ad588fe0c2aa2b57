package sim

import "strings"

func splitArgs(s string) []string { return strings.Fields(s) }
