package slots

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestLuaNamesMatchGo fails when the names Go and the scripts share drift
// apart: a constant of names.go without a Lua name, a Lua name the scripts
// do not use or use without it being defined, or a key suffix or config
// field written as a literal again (in Lua or in this package's Go).
func TestLuaNamesMatchGo(t *testing.T) {
	consts, listed := namesGoDecls(t)
	for _, c := range consts {
		if !listed[c] {
			t.Errorf("names.go: constant %s has no entry in luaNames: the scripts cannot use it", c)
		}
	}
	defined := map[string]bool{}
	values := map[string]string{}
	nameRe := regexp.MustCompile(`^(KEY|CF)_[A-Z0-9_]+$`)
	for _, n := range luaNames {
		if !nameRe.MatchString(n.lua) {
			t.Errorf("luaNames: %q is not a KEY_* or CF_* name", n.lua)
		}
		if defined[n.lua] {
			t.Errorf("luaNames: %s defined twice", n.lua)
		}
		if other, ok := values[n.value]; ok {
			t.Errorf("luaNames: %s and %s both stand for %q", other, n.lua, n.value)
		}
		defined[n.lua] = true
		values[n.value] = n.lua
	}

	code := luaCode(t)
	used := map[string]bool{}
	for file, src := range code {
		for _, id := range regexp.MustCompile(`\b(?:KEY|CF)_[A-Z0-9_]+\b`).FindAllString(src, -1) {
			used[id] = true
			if !defined[id] {
				t.Errorf("%s: %s is not defined by luaNames (names.go)", file, id)
			}
		}
		for _, m := range regexp.MustCompile(`\bK\s*\.\.\s*('[^']*'|"[^"]*")`).FindAllStringSubmatch(src, -1) {
			t.Errorf("%s: key built from the literal %s: use a KEY_* name", file, m[1])
		}
		for _, m := range regexp.MustCompile(`'([^']*)'|"([^"]*)"`).FindAllStringSubmatch(src, -1) {
			lit := m[1] + m[2]
			if n, ok := values[lit]; ok && strings.HasPrefix(n, "CF_") {
				t.Errorf("%s: config field %q written as a literal: use %s", file, lit, n)
			}
		}
	}
	for _, n := range luaNames {
		if !used[n.lua] {
			t.Errorf("%s (%q) is used by no script: drop it from names.go, or a script spells it as a literal", n.lua, n.value)
		}
	}

	// Go: the package's own code names keys and config fields by constant.
	// A few literals equal a shared name by coincidence and mean something
	// else; they are listed by file with what they are.
	coincidences := map[[2]string]string{
		{"maintenance.go", "pods"}:     "stats.lua's reply field: the pool's pod count",
		{"maintenance.go", "idle:"}:    "stats.lua's reply field: idle slots of a class",
		{"pools.go", "managed"}:        "a log attribute",
		{"configcache_test.go", "gen"}: "a generation value",
		{"pods_test.go", "resv"}:       "a task id",
	}
	goFiles, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, path := range goFiles {
		if path == "names.go" || path == "names_test.go" {
			continue
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.Field:
				return n.Tag == nil // struct tags (json names) are not Redis names
			case *ast.BasicLit:
				if n.Kind != token.STRING {
					return true
				}
				s, err := strconv.Unquote(n.Value)
				if err != nil {
					return true
				}
				if name, ok := values[s]; ok && coincidences[[2]string{path, s}] == "" {
					t.Errorf("%s: %q written as a literal: use the constant behind %s in names.go", fset.Position(n.Pos()), s, name)
				}
			}
			return true
		})
	}
}

// namesGoDecls returns the constants names.go declares and the identifiers
// luaNames refers to.
func namesGoDecls(t *testing.T) (consts []string, listed map[string]bool) {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "names.go", nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	listed = map[string]bool{}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok {
			continue
		}
		for _, spec := range g.Specs {
			v, ok := spec.(*ast.ValueSpec)
			if !ok {
				continue
			}
			switch g.Tok {
			case token.CONST:
				for _, n := range v.Names {
					consts = append(consts, n.Name)
				}
			case token.VAR:
				if len(v.Names) == 1 && v.Names[0].Name == "luaNames" {
					ast.Inspect(v.Values[0], func(n ast.Node) bool {
						if id, ok := n.(*ast.Ident); ok {
							listed[id.Name] = true
						}
						return true
					})
				}
			}
		}
	}
	if len(consts) == 0 || len(listed) == 0 {
		t.Fatal("names.go: found no constants or no luaNames")
	}
	return consts, listed
}

// luaCode returns every script's source without its comments, by file.
func luaCode(t *testing.T) map[string]string {
	t.Helper()
	files, err := fs.Glob(luaFS, "lua/*.lua")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, f := range files {
		b, err := luaFS.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var code strings.Builder
		for _, line := range strings.Split(string(b), "\n") {
			code.WriteString(stripLuaComment(line) + "\n")
		}
		out[f] = code.String()
	}
	if len(out) < 2 {
		t.Fatalf("found %d scripts", len(out))
	}
	return out
}

// stripLuaComment cuts a line at a "--" outside a string literal.
func stripLuaComment(line string) string {
	var quote byte
	for i := 0; i < len(line); i++ {
		switch c := line[i]; {
		case quote != 0 && c == '\\':
			i++
		case quote != 0 && c == quote:
			quote = 0
		case quote != 0:
		case c == '\'' || c == '"':
			quote = c
		case c == '-' && i+1 < len(line) && line[i+1] == '-':
			return line[:i]
		}
	}
	return line
}

// TestInlineNamesWritesEveryNameAsItsLiteral checks what the scripts get
// for the shared names: each whole identifier replaced by its Go value as a
// Lua string literal; identifiers that only contain a name, comments and
// string literals left as they are. (A name left in a built script would be
// a global, which Redis refuses: every script test would fail.)
func TestInlineNamesWritesEveryNameAsItsLiteral(t *testing.T) {
	for _, n := range luaNames {
		if strings.ContainsAny(n.value, "\\\"'\n") {
			t.Errorf("%s: %q needs escaping in Lua", n.lua, n.value)
		}
		got, want := inlineNames("local x = K .. "+n.lua+" .. id"), "local x = K .. "+strconv.Quote(n.value)+" .. id"
		if got != want {
			t.Errorf("inlineNames = %q, want %q", got, want)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"KEY_QAT KEY_Q KEY_QX xKEY_Q", `"qat" "q:" KEY_QX xKEY_Q`},
		{"-- KEY_T in a comment, the pod's\nKEY_T", "-- KEY_T in a comment, the pod's\n\"t:\""},
		{`x = 'KEY_T' .. "KEY_T \" KEY_T" .. KEY_T`, `x = 'KEY_T' .. "KEY_T \" KEY_T" .. "t:"`},
		{"return KEY_EV", `return "ev"`},
	} {
		if got := inlineNames(tc.in); got != tc.want {
			t.Errorf("inlineNames(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
