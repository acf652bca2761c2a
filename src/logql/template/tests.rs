//! Templates against the examples of Loki's template documentation.

use super::*;

struct Entry(Vec<(String, String)>, &'static str, i64);

impl Context for Entry {
    fn label(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    fn labels(&self) -> Vec<(String, String)> {
        self.0.clone()
    }
    fn line(&self) -> &[u8] {
        self.1.as_bytes()
    }
    fn timestamp(&self) -> i64 {
        self.2
    }
}

fn render(template: &str) -> String {
    let entry = Entry(
        [
            ("path", "/api/v1/query"),
            ("ip", " 1.1.1.1 "),
            ("status", "200"),
            ("duration", "3000"),
            ("err", "ErrTimeout happened"),
            ("cluster", "eu-cluster"),
            ("from", "1679577215"),
            ("empty", ""),
            ("queries", r#"[{"query":"a"},{"query":"b"}]"#),
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .to_vec(),
        "the HELLO line",
        1_136_214_245_000_000_000,
    );
    let t = Template::parse(template).unwrap_or_else(|e| panic!("{template}: {e}"));
    String::from_utf8(
        t.render(&entry)
            .unwrap_or_else(|e| panic!("{template}: {e}")),
    )
    .unwrap()
}

#[test]
fn documented_examples() {
    for (template, want) in [
        // Template pipeline syntax.
        (
            r#"{{ .path | replace "/" "_" | trunc 5 | upper }}"#,
            "_API_",
        ),
        (
            r#"{{ if and (contains "he" "hello") (contains "llo" "hello") }} yes {{end}}"#,
            " yes ",
        ),
        (
            r#"{{ if contains "ErrTimeout" .err }} timeout {{else if contains "he" "hello"}} yes {{else}} no {{end}}"#,
            " timeout ",
        ),
        // Built-in variables.
        ("{{ __line__ | lower }}", "the hello line"),
        ("{{ __timestamp__ }}", "2006-01-02 15:04:05 +0000 UTC"),
        (
            r#"{{ __timestamp__ | date "2006-01-02T15:04:05.00Z-07:00" }}"#,
            "2006-01-02T15:04:05.00Z+00:00",
        ),
        ("{{ __timestamp__ | unixEpoch }}", "1136214245"),
        // Date and time.
        (
            r#"{{ toDate "2006-01-02" "2021-11-02" | unixEpoch }}"#,
            "1635811200",
        ),
        (
            r#"{{ toDateInZone "2006-01-02" "UTC" "2021-11-02" | unixEpochMillis }}"#,
            "1635811200000",
        ),
        (
            r#"{{ date "2006-01-02" (unixToTime .from) }}"#,
            "2023-03-23",
        ),
        // String manipulation.
        (
            r#"{{ alignLeft 5 "hello world"}}|{{ alignLeft 5 "hi"}}|"#,
            "hello|hi   |",
        ),
        (
            r#"{{ alignRight 5 "hello world"}}|{{ alignRight 5 "hi"}}"#,
            "world|   hi",
        ),
        (
            r#"{{ "hello" | b64enc }} {{ "aGVsbG8=" | b64dec }}"#,
            "aGVsbG8= hello",
        ),
        (
            r#"{{ default "-" "" }} {{ default "-" "foo" }} {{ .missing | default "-" }} {{ .empty | default "e" }}"#,
            "- foo - e",
        ),
        (
            r#"{{ lower "HELLO"}} {{ upper "hello" }} {{ title "hello world"}}"#,
            "hello HELLO Hello World",
        ),
        (r#"{{ repeat 3 "hello" }}"#, "hellohellohello"),
        (
            r#"{{ printf "The IP address was %s" .status }}"#,
            "The IP address was 200",
        ),
        (r#"[{{ printf "%-10.3s" .path }}]"#, "[/ap       ]"),
        (
            r#"{{ .cluster | replace "-cluster" "" }} {{ replace "hello" "world" "hello world" }}"#,
            "eu world world",
        ),
        (
            r#"{{ .path | substr 1 4 }} {{ substr 0 5 "hello world"}} {{ substr 6 11 "hello world"}}"#,
            "api hello world",
        ),
        (
            r#"{{ .ip | trim }}|{{ trimAll "$" "$5.00" }}|{{ trimPrefix "-" "-hello" }}|{{ trimSuffix "-" "hello-" }}"#,
            "1.1.1.1|5.00|hello|hello",
        ),
        (
            r#"{{ trunc 5 "hello world"}} {{ trunc -5 "hello world"}}"#,
            "hello world",
        ),
        (
            r#"{{ "a b&c" | urlencode }} {{ "a+b%26c" | urldecode }}"#,
            "a+b%26c a b&c",
        ),
        (
            r#"{{ indent 2 "a\nb" }}|{{ nindent 1 "x" }}"#,
            "  a\n  b|\n x",
        ),
        // Logical functions.
        (
            r#"{{ if eq "hello" "hello" }} yes {{end}}{{ if hasSuffix "Timeout" "ErrTimeout" }}t{{end}}{{ if hasPrefix "he" "hello" }}p{{end}}"#,
            " yes tp",
        ),
        // Mathematical functions.
        (
            "{{ add 3 2 5 }} {{ addf 3.5 2 5 }} {{ ceil 123.001 }} {{ div 10 2}} {{ divf 10 2 4}}",
            "10 10.5 124 5 1.25",
        ),
        (
            r#"{{ "3.5" | float64 }} {{ floor 123.9999 }} {{ "3" | int }} {{ max 1 2 3 }} {{ maxf 1 2.5 3 }}"#,
            "3.5 123 3 3 3",
        ),
        (
            "{{ min 1 2 3 }} {{ minf 1.5 2.5 3 }} {{ mul 5 2 3}} {{ mulf 5.5 2 2.5 }} {{ mod 10 3}}",
            "1 1.5 30 27.5 1",
        ),
        (
            "{{ round 123.555555 3 }} {{ round 123.88571428571 5 .2 }} {{ sub 5 2 }} {{ subf 5.5 2 1.5 }}",
            "123.556 123.88572 3 2",
        ),
        ("{{ div .duration 1000 }}", "3"),
        // Regular expressions.
        (
            r#"{{ count "a|b" "abab" }} {{ count "o" "foo" }} {{ __line__ | count "L" }}"#,
            "4 2 2",
        ),
        (
            r#"{{ regexReplaceAll "(a*)bc" "aabcx" "${1}a" }} {{ regexReplaceAllLiteral "(ts=)" "ts=1" "timestamp=" }}"#,
            "aaax timestamp=1",
        ),
        // Old Loki names.
        (
            r#"{{ ToUpper "a" }}{{ Replace "aaa" "a" "b" 2 }}{{ TrimSpace " x " }}{{ TrimPrefix "-a" "-" }}"#,
            "Abbaxa",
        ),
        // fromJson and range.
        (
            "{{ range $q := fromJson .queries }}[{{ $q.query }}]{{ end }}",
            "[a][b]",
        ),
        // Comments, trim markers, variables, with.
        ("a {{- /* note */ -}} b {{- .status -}} c", "ab200c"),
        (
            "{{ $x := .status }}{{ with .path }}{{ . }} {{ $x }}{{ end }}{{ with .empty }}no{{ else }}yes{{ end }}",
            "/api/v1/query 200yes",
        ),
        (
            "{{ .missing }}|{{ len .path }}|{{ print 1 2 \"a\" }}",
            "|13|1 2a",
        ),
        (
            "{{ printf \"%d|%5.2f|%x|%q|%v|%t\" 42 3.14159 255 \"hi\" 1.5 true }}",
            "42| 3.14|ff|\"hi\"|1.5|true",
        ),
    ] {
        assert_eq!(render(template), want, "{template}");
    }
}

#[test]
fn errors_are_clear_and_output_is_bounded() {
    for bad in [
        "{{ .a ",
        "{{ nosuchfn .a }}",
        "{{ if .a }}x",
        "{{ end }}",
        "{{ define \"x\" }}{{ end }}",
        "{{ (((.a }}",
    ] {
        assert!(Template::parse(bad).is_err(), "{bad}");
    }
    let entry = Entry(Vec::new(), "", 0);
    for failing in [
        r#"{{ repeat 1000000000 "xx" }}"#,
        r#"{{ alignLeft 1000000000 "x" }}"#,
        r#"{{ indent 1000000000 "x" }}"#,
        "{{ div 1 0 }}",
        r#"{{ toDate "2006-01-02" "nope" }}"#,
        r#"{{ toDateInZone "2006" "Mars/Base" "2021" }}"#,
        r#"{{ duration "1d" }}"#,
        "{{ range 1000000000000 }}{{ end }}",
    ] {
        let t = Template::parse(failing).unwrap();
        assert!(t.render(&entry).is_err(), "{failing}");
    }
    let deep = format!("{}1{}", "(".repeat(200), ")".repeat(200));
    assert!(Template::parse(&format!("{{{{ {deep} }}}}")).is_err());
    let nested = "{{ if 1 }}".repeat(200) + &"{{ end }}".repeat(200);
    assert!(Template::parse(&nested).is_err());
}

#[test]
fn labels_read_lists_fields() {
    let t = Template::parse("{{ .a }} {{ .b | upper }} {{ if .c }}{{ end }}").unwrap();
    assert_eq!(
        t.labels_read(),
        Some(vec!["a".into(), "b".into(), "c".into()])
    );
    assert_eq!(
        Template::parse("{{ range . }}{{ end }}")
            .unwrap()
            .labels_read(),
        None
    );
}
