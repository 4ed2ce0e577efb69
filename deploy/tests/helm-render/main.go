// helm-render renders a Helm chart's templates offline, for tests on machines without helm: Go's
// text/template (Helm's own engine) with the few Helm and Sprig functions the tracer chart uses.
// Unknown functions and missing values are errors, as with `helm lint --strict`.
//
// Usage: helm-render CHART_DIR CONTEXT_JSON — CONTEXT_JSON holds {"Values", "Release", "Chart"} (the caller
// merges values.yaml with overrides and reads Chart.yaml). Prints every rendered manifest after a
// "# Source: NAME" line, separated by "---".
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/template"
)

func main() {
	if len(os.Args) != 3 {
		fail("usage: helm-render CHART_DIR CONTEXT_JSON")
	}
	chart := os.Args[1]
	raw, err := os.ReadFile(os.Args[2])
	check(err)
	var context map[string]interface{}
	check(json.Unmarshal(raw, &context))
	chartName := context["Chart"].(map[string]interface{})["Name"].(string)
	basePath := chartName + "/templates"

	root := template.New("root").Option("missingkey=error")
	root.Funcs(functions(root))
	files, err := filepath.Glob(filepath.Join(chart, "templates", "*"))
	check(err)
	sort.Strings(files)
	var manifests []string
	for _, file := range files {
		text, err := os.ReadFile(file)
		check(err)
		name := basePath + "/" + filepath.Base(file)
		_, err = root.New(name).Parse(string(text))
		check(err)
		if !strings.HasPrefix(filepath.Base(file), "_") && strings.HasSuffix(file, ".yaml") {
			manifests = append(manifests, name)
		}
	}
	for _, name := range manifests {
		data := map[string]interface{}{}
		for key, value := range context {
			data[key] = value
		}
		data["Template"] = map[string]interface{}{"Name": name, "BasePath": basePath}
		var out bytes.Buffer
		if err := root.ExecuteTemplate(&out, name, data); err != nil {
			fail(err.Error())
		}
		if strings.TrimSpace(out.String()) != "" {
			fmt.Printf("---\n# Source: %s\n%s\n", name, strings.TrimSpace(out.String()))
		}
	}
}

// functions are the Helm (include, required, toYaml) and Sprig functions the chart calls.
func functions(root *template.Template) template.FuncMap {
	return template.FuncMap{
		"include": func(name string, data interface{}) (string, error) {
			var out bytes.Buffer
			err := root.ExecuteTemplate(&out, name, data)
			return out.String(), err
		},
		"required": func(message string, value interface{}) (interface{}, error) {
			if empty(value) {
				return nil, fmt.Errorf("%s", message)
			}
			return value, nil
		},
		"toYaml":  func(value interface{}) string { return strings.TrimSuffix(yaml(value, 0), "\n") },
		"nindent": func(spaces int, text string) string { return "\n" + indent(spaces, text) },
		"indent":  indent,
		"quote":   func(value interface{}) string { return strconv.Quote(fmt.Sprint(value)) },
		"default": func(fallback interface{}, value interface{}) interface{} {
			if empty(value) {
				return fallback
			}
			return value
		},
		"contains":   func(substring, text string) bool { return strings.Contains(text, substring) },
		"trimSuffix": func(suffix, text string) string { return strings.TrimSuffix(text, suffix) },
		"trunc": func(length int, text string) string {
			if len(text) > length {
				return text[:length]
			}
			return text
		},
		"sha256sum": func(text string) string {
			sum := sha256.Sum256([]byte(text))
			return hex.EncodeToString(sum[:])
		},
	}
}

func indent(spaces int, text string) string {
	pad := strings.Repeat(" ", spaces)
	return pad + strings.ReplaceAll(text, "\n", "\n"+pad)
}

// empty follows Sprig's `empty`: nil, false, 0, "" and empty collections.
func empty(value interface{}) bool {
	switch v := value.(type) {
	case nil:
		return true
	case bool:
		return !v
	case float64:
		return v == 0
	case string:
		return v == ""
	case []interface{}:
		return len(v) == 0
	case map[string]interface{}:
		return len(v) == 0
	}
	return false
}

// yaml writes JSON-decoded data as block-style YAML with sorted keys, like Helm's toYaml.
func yaml(value interface{}, level int) string {
	pad := strings.Repeat("  ", level)
	var out strings.Builder
	switch v := value.(type) {
	case map[string]interface{}:
		if len(v) == 0 {
			return "{}\n"
		}
		keys := make([]string, 0, len(v))
		for key := range v {
			keys = append(keys, key)
		}
		sort.Strings(keys)
		for _, key := range keys {
			out.WriteString(pad + mappingKey(key) + ":")
			out.WriteString(nested(v[key], level+1))
		}
	case []interface{}:
		if len(v) == 0 {
			return "[]\n"
		}
		for _, item := range v {
			text := yaml(item, level+1)
			if isCollection(item) && !empty(item) {
				// The first line of the item goes after "- ".
				text = strings.TrimPrefix(text, strings.Repeat("  ", level+1))
			}
			out.WriteString(pad + "- " + text)
		}
	default:
		return scalar(v) + "\n"
	}
	return out.String()
}

// nested is what follows "key:": a scalar on the same line, a collection on the next lines.
func nested(value interface{}, level int) string {
	if isCollection(value) && !empty(value) {
		return "\n" + yaml(value, level)
	}
	return " " + yaml(value, level)
}

// mappingKey writes identifier-like keys plain and quotes the others.
func mappingKey(key string) string {
	for i, c := range key {
		plain := c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			(i > 0 && ((c >= '0' && c <= '9') || c == '.' || c == '-' || c == '/'))
		if !plain {
			return strconv.Quote(key)
		}
	}
	switch strings.ToLower(key) {
	case "", "true", "false", "null", "yes", "no", "on", "off", "y", "n":
		return strconv.Quote(key)
	}
	return key
}

func isCollection(value interface{}) bool {
	switch value.(type) {
	case map[string]interface{}, []interface{}:
		return true
	}
	return false
}

func scalar(value interface{}) string {
	switch v := value.(type) {
	case nil:
		return "null"
	case bool:
		return strconv.FormatBool(v)
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case string:
		return strconv.Quote(v)
	}
	fail(fmt.Sprintf("toYaml: unsupported value %#v", value))
	return ""
}

func check(err error) {
	if err != nil {
		fail(err.Error())
	}
}

func fail(message string) {
	fmt.Fprintln(os.Stderr, "helm-render:", message)
	os.Exit(1)
}
