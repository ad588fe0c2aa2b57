package config

import (
	"fmt"
	"go/ast"
	goparser "go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// envRead is one place in the code that reads an environment variable.
type envRead struct {
	Pos  string // file:line, relative to the scanned root
	Pkg  string // the package's directory, relative to the root ("internal/config")
	Name string // the variable; "?" when the code does not name it, "*" for the whole environment
}

// envScan is what scanEnv found in a tree of Go code.
type envScan struct {
	Reads []envRead
	// TestOnly are the packages (directories) that only tests import: test
	// support (internal/testutil, ...). They cannot import config (config's
	// packages' own tests import them).
	TestOnly map[string]bool
}

// scanEnv parses every non-test .go file under root (a module: root/go.mod
// names it), skipping testdata and hidden directories, and finds each read
// of an environment variable:
//
//   - a call of os.Getenv, os.LookupEnv or syscall.Getenv, and os.Environ;
//   - a call through a value of a lookup type (func(string) string,
//     func(string) (string, bool), Lookup): a parameter, a field or a
//     variable declared with that type or assigned os.Getenv/os.LookupEnv;
//   - a call of a helper: a function or method of the tree that passes one
//     of its string parameters on as the name of a read (found to a fixed
//     point, across packages).
//
// A read's name is its argument when that is a string constant (a literal,
// or a constant of the same or another package of the tree); a call that
// only passes its own parameter on is the helper's body, not a read.
func scanEnv(root string) (envScan, error) {
	modBytes, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		return envScan{}, err
	}
	module := ""
	for _, line := range strings.Split(string(modBytes), "\n") {
		if m, ok := strings.CutPrefix(strings.TrimSpace(line), "module "); ok {
			module = strings.TrimSpace(m)
		}
	}
	fset := token.NewFileSet()
	type file struct {
		pkg string // directory relative to root
		f   *ast.File
	}
	var files []file
	testImports := map[string]bool{} // import paths some _test.go file imports
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".") || d.Name() == "vendor") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		f, err := goparser.ParseFile(fset, path, nil, goparser.SkipObjectResolution)
		if err != nil {
			return err
		}
		if strings.HasSuffix(path, "_test.go") {
			for _, im := range f.Imports {
				p, _ := strconv.Unquote(im.Path.Value)
				testImports[p] = true
			}
			return nil
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		files = append(files, file{pkg: filepath.ToSlash(rel), f: f})
		return nil
	})
	if err != nil {
		return envScan{}, err
	}
	importPath := func(pkg string) string {
		if pkg == "." {
			return module
		}
		return module + "/" + pkg
	}

	// String constants of every package, by import path.
	consts := map[string]map[string]string{}
	for _, fl := range files {
		ip := importPath(fl.pkg)
		if consts[ip] == nil {
			consts[ip] = map[string]string{}
		}
		for _, decl := range fl.f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, n := range vs.Names {
					if i < len(vs.Values) {
						if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
							consts[ip][n.Name], _ = strconv.Unquote(lit.Value)
						}
					}
				}
			}
		}
	}

	// Imports of each file (local name → path), the non-test import graph
	// and the names each package declares with a lookup type.
	imports := make([]map[string]string, len(files))
	importers := map[string]map[string]bool{} // import path → the non-test packages (dirs) that import it
	lookupNames := map[string]map[string]bool{}
	for i, fl := range files {
		imports[i] = map[string]string{}
		for _, im := range fl.f.Imports {
			p, _ := strconv.Unquote(im.Path.Value)
			name := p[strings.LastIndex(p, "/")+1:]
			if im.Name != nil {
				name = im.Name.Name
			}
			imports[i][name] = p
			if p != importPath(fl.pkg) {
				if importers[p] == nil {
					importers[p] = map[string]bool{}
				}
				importers[p][fl.pkg] = true
			}
		}
		ln := lookupNames[fl.pkg]
		if ln == nil {
			ln = map[string]bool{}
			lookupNames[fl.pkg] = ln
		}
		ast.Inspect(fl.f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.Field:
				if isLookupType(n.Type) {
					for _, id := range n.Names {
						ln[id.Name] = true
					}
				}
			case *ast.ValueSpec:
				if n.Type != nil && isLookupType(n.Type) {
					for _, id := range n.Names {
						ln[id.Name] = true
					}
				}
				for j, v := range n.Values {
					if isOSLookup(v, imports[i]) && j < len(n.Names) {
						ln[n.Names[j].Name] = true
					}
				}
			case *ast.AssignStmt:
				for j, v := range n.Rhs {
					if id, ok := n.Lhs[min(j, len(n.Lhs)-1)].(*ast.Ident); ok && isOSLookup(v, imports[i]) {
						ln[id.Name] = true
					}
				}
			}
			return true
		})
	}

	// helpers: "importpath.Func" or "importpath.(Method)" → the index of the
	// parameter it passes on as a variable's name.
	helpers := map[string]int{}
	calleeKey := func(i int, fl file, call *ast.CallExpr) (key string, seed bool) {
		switch fn := call.Fun.(type) {
		case *ast.Ident:
			if lookupNames[fl.pkg][fn.Name] {
				return "", true
			}
			if _, ok := helpers[importPath(fl.pkg)+"#"+fn.Name]; ok {
				return importPath(fl.pkg) + "#" + fn.Name, false
			}
			return importPath(fl.pkg) + "." + fn.Name, false
		case *ast.SelectorExpr:
			if x, ok := fn.X.(*ast.Ident); ok {
				if p, ok := imports[i][x.Name]; ok {
					if (p == "os" && (fn.Sel.Name == "Getenv" || fn.Sel.Name == "LookupEnv")) || (p == "syscall" && fn.Sel.Name == "Getenv") {
						return "", true
					}
					return p + "." + fn.Sel.Name, false
				}
			}
			if lookupNames[fl.pkg][fn.Sel.Name] {
				return "", true
			}
			return importPath(fl.pkg) + ".(" + fn.Sel.Name + ")", false
		}
		return "", false
	}
	// isRead reports whether call reads a variable, and which argument names it.
	isRead := func(i int, fl file, call *ast.CallExpr) (arg int, ok bool) {
		key, seed := calleeKey(i, fl, call)
		if seed {
			return 0, len(call.Args) > 0
		}
		if a, ok := helpers[key]; ok && a < len(call.Args) {
			return a, true
		}
		return 0, false
	}
	constName := func(i int, fl file, e ast.Expr) (string, bool) {
		switch e := e.(type) {
		case *ast.BasicLit:
			if e.Kind == token.STRING {
				s, err := strconv.Unquote(e.Value)
				return s, err == nil
			}
		case *ast.Ident:
			s, ok := consts[importPath(fl.pkg)][e.Name]
			return s, ok
		case *ast.SelectorExpr:
			if x, ok := e.X.(*ast.Ident); ok {
				if p, ok := imports[i][x.Name]; ok {
					s, ok := consts[p][e.Sel.Name]
					return s, ok
				}
			}
		}
		return "", false
	}
	// walk visits every call in every function body with the string
	// parameters in scope (a literal's own and its enclosing functions').
	// A literal assigned to a local variable (get := func(name string) ...)
	// or returned by a declared function (a factory of lookups) has a key,
	// so that forwarding in it makes it a helper too.
	type scope struct {
		key    string         // the helper key of this function; "" for an anonymous literal
		params map[string]int // string parameters by name → index
	}
	factories := map[string]int{} // declared functions that return a helper literal
	walk := func(visit func(i int, fl file, sc []scope, call *ast.CallExpr)) {
		for i, fl := range files {
			for _, decl := range fl.f.Decls {
				fd, ok := decl.(*ast.FuncDecl)
				if !ok || fd.Body == nil {
					continue
				}
				key := importPath(fl.pkg) + "." + fd.Name.Name
				if fd.Recv != nil {
					key = importPath(fl.pkg) + ".(" + fd.Name.Name + ")"
				}
				local := func(name string) string { return importPath(fl.pkg) + "#" + name }
				var inspect func(n ast.Node, sc []scope)
				inspect = func(n ast.Node, sc []scope) {
					ast.Inspect(n, func(n ast.Node) bool {
						switch n := n.(type) {
						case *ast.AssignStmt:
							for j, r := range n.Rhs {
								id, ok := n.Lhs[min(j, len(n.Lhs)-1)].(*ast.Ident)
								if !ok {
									continue
								}
								switch r := r.(type) {
								case *ast.FuncLit:
									inspect(r.Body, append(sc[:len(sc):len(sc)], scope{key: local(id.Name), params: stringParams(r.Type)}))
									for _, l := range n.Lhs {
										inspect(l, sc)
									}
									return false
								case *ast.CallExpr:
									if k, _ := calleeKey(i, fl, r); k != "" {
										if idx, ok := factories[k]; ok {
											if _, known := helpers[local(id.Name)]; !known {
												helpers[local(id.Name)] = idx
											}
										}
									}
								}
							}
						case *ast.ReturnStmt:
							for _, r := range n.Results {
								if lit, ok := r.(*ast.FuncLit); ok && len(sc) == 1 {
									inspect(lit.Body, []scope{sc[0], {key: "factory:" + key, params: stringParams(lit.Type)}})
									return false
								}
							}
						case *ast.FuncLit:
							inspect(n.Body, append(sc[:len(sc):len(sc)], scope{params: stringParams(n.Type)}))
							return false
						case *ast.CallExpr:
							visit(i, fl, sc, n)
						}
						return true
					})
				}
				inspect(fd.Body, []scope{{key: key, params: stringParams(fd.Type)}})
			}
		}
	}
	// forwarded: the name argument is a parameter of an enclosing function.
	forwarded := func(sc []scope, e ast.Expr) (key string, idx int, ok bool) {
		id, isID := e.(*ast.Ident)
		if !isID {
			return "", 0, false
		}
		for j := len(sc) - 1; j >= 0; j-- {
			if k, ok := sc[j].params[id.Name]; ok {
				return sc[j].key, k, true
			}
		}
		return "", 0, false
	}
	for changed := true; changed; {
		before := len(helpers) + len(factories)
		changed = false
		walk(func(i int, fl file, sc []scope, call *ast.CallExpr) {
			arg, ok := isRead(i, fl, call)
			if !ok {
				return
			}
			key, idx, ok := forwarded(sc, call.Args[arg])
			switch {
			case !ok || key == "":
			case strings.HasPrefix(key, "factory:"):
				if _, known := factories[key[len("factory:"):]]; !known {
					factories[key[len("factory:"):]] = idx
					changed = true
				}
			default:
				if _, known := helpers[key]; !known {
					helpers[key] = idx
					changed = true
				}
			}
		})
		changed = changed || len(helpers)+len(factories) != before
	}

	var out envScan
	walk(func(i int, fl file, sc []scope, call *ast.CallExpr) {
		pos := fset.Position(call.Pos())
		rel, _ := filepath.Rel(root, pos.Filename)
		at := fmt.Sprintf("%s:%d", filepath.ToSlash(rel), pos.Line)
		if sel, ok := call.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "Environ" {
			if x, ok := sel.X.(*ast.Ident); ok && imports[i][x.Name] == "os" {
				out.Reads = append(out.Reads, envRead{Pos: at, Pkg: fl.pkg, Name: "*"})
				return
			}
		}
		arg, ok := isRead(i, fl, call)
		if !ok {
			return
		}
		if _, _, ok := forwarded(sc, call.Args[arg]); ok {
			return // a helper's body: its callers are the reads
		}
		name, ok := constName(i, fl, call.Args[arg])
		if !ok {
			name = "?"
		}
		out.Reads = append(out.Reads, envRead{Pos: at, Pkg: fl.pkg, Name: name})
	})
	sort.Slice(out.Reads, func(a, b int) bool { return out.Reads[a].Pos < out.Reads[b].Pos })

	// Test-only: a library that tests import and that no package but
	// test-only ones imports (to a fixed point: test support imports test
	// support).
	out.TestOnly = map[string]bool{}
	for changed := true; changed; {
		changed = false
		for _, fl := range files {
			ip := importPath(fl.pkg)
			if out.TestOnly[fl.pkg] || fl.f.Name.Name == "main" || !testImports[ip] {
				continue
			}
			only := true
			for by := range importers[ip] {
				only = only && out.TestOnly[by]
			}
			if only {
				out.TestOnly[fl.pkg] = true
				changed = true
			}
		}
	}
	return out, nil
}

// isLookupType reports whether t is func(string) string,
// func(string) (string, bool), Lookup or x.Lookup.
func isLookupType(t ast.Expr) bool {
	switch t := t.(type) {
	case *ast.Ident:
		return t.Name == "Lookup"
	case *ast.SelectorExpr:
		return t.Sel.Name == "Lookup"
	case *ast.FuncType:
		if t.Params == nil || len(t.Params.List) != 1 || len(t.Params.List[0].Names) > 1 || !isIdent(t.Params.List[0].Type, "string") {
			return false
		}
		var res []ast.Expr
		if t.Results != nil {
			for _, f := range t.Results.List {
				for range max(1, len(f.Names)) {
					res = append(res, f.Type)
				}
			}
		}
		return (len(res) == 1 && isIdent(res[0], "string")) || (len(res) == 2 && isIdent(res[0], "string") && isIdent(res[1], "bool"))
	}
	return false
}

func isIdent(e ast.Expr, name string) bool {
	id, ok := e.(*ast.Ident)
	return ok && id.Name == name
}

// isOSLookup reports whether e is os.Getenv or os.LookupEnv as a value.
func isOSLookup(e ast.Expr, imports map[string]string) bool {
	sel, ok := e.(*ast.SelectorExpr)
	if !ok {
		return false
	}
	x, ok := sel.X.(*ast.Ident)
	return ok && imports[x.Name] == "os" && (sel.Sel.Name == "Getenv" || sel.Sel.Name == "LookupEnv")
}

// stringParams are ft's parameters of type string, by name → index.
func stringParams(ft *ast.FuncType) map[string]int {
	out := map[string]int{}
	i := 0
	for _, f := range ft.Params.List {
		n := max(1, len(f.Names))
		for j := range n {
			if isIdent(f.Type, "string") && j < len(f.Names) {
				out[f.Names[j].Name] = i
			}
			i++
		}
	}
	return out
}

// documented are the variables .env.example at path names: a line
// NAME=value, or the same commented out (# NAME=value).
func documented(path string) (map[string]string, error) {
	doc, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(doc), "\n") {
		line = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "#"))
		if k, v, ok := strings.Cut(line, "="); ok && k != "" && k == strings.ToUpper(k) && !strings.ContainsAny(k, " \t") {
			out[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return out, nil
}

// envViolations checks a scan against the rule: only internal/config reads
// the environment, by name, and every variable read is documented in
// .env.example. Test support (TestOnly packages), which cannot import
// config, may read its own variables, documented too.
func envViolations(s envScan, doc map[string]string) []string {
	var out []string
	for _, r := range s.Reads {
		switch {
		case r.Name == "*":
			out = append(out, fmt.Sprintf("%s: reads the whole environment (os.Environ)", r.Pos))
			continue
		case r.Name == "?":
			out = append(out, fmt.Sprintf("%s: reads a variable it does not name with a constant", r.Pos))
			continue
		case r.Pkg != "internal/config" && !s.TestOnly[r.Pkg]:
			out = append(out, fmt.Sprintf("%s: reads %s outside internal/config", r.Pos, r.Name))
		}
		if _, ok := doc[r.Name]; !ok {
			out = append(out, fmt.Sprintf("%s: reads %s, which .env.example does not document", r.Pos, r.Name))
		}
	}
	return out
}
