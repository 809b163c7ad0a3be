//! What a language starts for the entry file a submission names. Most toolchains take the file's
//! name as given (`{entry}`) or its stem (`{entry_stem}`); the ones whose compilers name what they
//! make after something else read that from the source or derive it as the compiler does
//! (`{main}`): Java's public class, Kotlin's file class, Scala's `@main` method or object, Erlang's
//! `-module`. Some sources are scripts their language runs another way (a Java file whose public
//! class is named unlike the file, as Java's source launcher runs it; an Erlang escript): the
//! registry's `as_script` commands run those.

use serde::Deserialize;

/// The rule a language names its main class or module by (`entry_point` in the registry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryPoint {
    /// The public top-level class, else a top-level class named as the file, else the first one.
    /// A public class named unlike its file is refused by javac: the source is run as a script.
    Java,
    /// The file class kotlinc makes: `[package.]<Stem>Kt`, or the name `@file:JvmName` gives.
    Kotlin,
    /// The `@main` method, else the top-level object with `main` (or `extends App`), with its
    /// package.
    Scala,
    /// The `-module`; a source without one (or that exports only `main/1`) is an escript.
    Erlang,
}

/// The names one job's command lines use for its entry file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryNames {
    /// The file as given (`src/Solution.java`): `{entry}`.
    pub file: String,
    /// Its name without folder and extension (`Solution`): `{entry_stem}`.
    pub stem: String,
    /// The class or module the run starts: `{main}` (the stem for a language without a rule).
    pub main: String,
    /// The source is a script for its language: the `as_script` commands run it.
    pub script: bool,
    /// The source needs an empty first line before it: escript takes a file's first line for
    /// its `#!` header and skips it, which would drop a program's first line (Judge0 adds the
    /// line too).
    pub header_line: bool,
}

/// Placeholders a job fills from its entry file.
pub const PLACEHOLDERS: [&str; 3] = ["{entry}", "{entry_stem}", "{main}"];

impl EntryNames {
    /// The names of entry file `file` holding `source`, by `rule` when the language has one.
    pub fn of(file: &str, source: &str, rule: Option<EntryPoint>) -> EntryNames {
        let stem = stem(file);
        let mut names = EntryNames {
            file: file.to_string(),
            main: stem.clone(),
            stem,
            script: false,
            header_line: false,
        };
        match rule {
            None => {}
            Some(EntryPoint::Java) => {
                let java = JavaSource::read(source);
                let public = java.classes.iter().find(|c| c.public);
                let class = public
                    .or_else(|| java.classes.iter().find(|c| c.name == names.stem))
                    .or(java.classes.first());
                if let Some(c) = class {
                    names.main = qualified(&java.package, &c.name);
                }
                names.script = public.is_some_and(|c| c.name != names.stem);
            }
            Some(EntryPoint::Kotlin) => {
                let tokens = tokens(source, Syntax::Kotlin);
                let class = jvm_name(&tokens).unwrap_or_else(|| kotlin_file_class(&names.stem));
                names.main = qualified(&package(&tokens), &class);
            }
            Some(EntryPoint::Scala) => {
                let tokens = tokens(source, Syntax::Scala);
                if let Some(m) = scala_main(&tokens) {
                    names.main = qualified(&package(&tokens), &m);
                }
            }
            Some(EntryPoint::Erlang) => {
                let erlang = ErlangSource::read(source);
                names.script = erlang.is_escript();
                names.header_line = names.script && !source.starts_with("#!");
                if let Some(m) = erlang.module {
                    names.main = m;
                }
            }
        }
        names
    }

    /// `argv` with the entry placeholders filled, in one pass: a file named `{main}.py` stays
    /// so.
    pub fn fill(&self, argv: &[String]) -> Vec<String> {
        let values = [
            (PLACEHOLDERS[0], &self.file),
            (PLACEHOLDERS[1], &self.stem),
            (PLACEHOLDERS[2], &self.main),
        ];
        argv.iter()
            .map(|arg| {
                let mut out = String::with_capacity(arg.len());
                let mut rest = arg.as_str();
                while let Some(i) = rest.find('{') {
                    out.push_str(&rest[..i]);
                    rest = &rest[i..];
                    match values.iter().find(|(p, _)| rest.starts_with(p)) {
                        Some((p, value)) => {
                            out.push_str(value);
                            rest = &rest[p.len()..];
                        }
                        None => {
                            out.push('{');
                            rest = &rest[1..];
                        }
                    }
                }
                out.push_str(rest);
                out
            })
            .collect()
    }
}

impl EntryPoint {
    /// The name a source given without one takes: the registry's default, or for Java the
    /// public class's (`public class HelloWorld` is HelloWorld.java, as javac wants it).
    pub fn default_file(rule: Option<EntryPoint>, default: &str, source: &str) -> String {
        let public = (rule == Some(EntryPoint::Java))
            .then(|| JavaSource::read(source).classes)
            .and_then(|classes| classes.into_iter().find(|c| c.public));
        match (public, default.rsplit_once('.')) {
            (Some(c), Some((_, ext))) => format!("{}.{ext}", c.name),
            _ => default.to_string(),
        }
    }
}

/// `src/Solution.java` -> `Solution`; `run` -> `run`.
fn stem(file: &str) -> String {
    let name = file.rsplit('/').next().unwrap_or(file);
    match name.rsplit_once('.') {
        Some((s, _)) if !s.is_empty() => s.to_string(),
        _ => name.to_string(),
    }
}

fn qualified(package: &str, name: &str) -> String {
    if package.is_empty() {
        name.to_string()
    } else {
        format!("{package}.{name}")
    }
}

/// kotlinc's class for the top-level functions of `<stem>.kt`: every character that is not a
/// letter or digit becomes `_`, the first letter is capitalised (ASCII only), `Kt` follows.
fn kotlin_file_class(stem: &str) -> String {
    let mut class: String = stem
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { '_' })
        .collect();
    if class.is_empty() {
        class.push('_');
    }
    if let Some(first) = class.get_mut(..1) {
        first.make_ascii_uppercase();
    }
    class + "Kt"
}

/// A token of a C-like source (Java, Kotlin, Scala), outside comments, with the brace depth it
/// is at.
#[derive(Debug, PartialEq)]
enum Token {
    Word(String, usize),
    Str(String),
    Punct(char, usize),
}

#[derive(Clone, Copy, PartialEq)]
enum Syntax {
    Java,
    Kotlin,
    Scala,
}

fn tokens(source: &str, syntax: Syntax) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = source.chars().peekable();
    let mut depth = 0usize;
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                // Kotlin's and Scala's block comments nest; Java's end at the first `*/`.
                let mut open = 1;
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        open -= 1;
                        if open == 0 {
                            break;
                        }
                        last = ' ';
                        continue;
                    }
                    if last == '/' && c == '*' && syntax != Syntax::Java {
                        open += 1;
                        last = ' ';
                        continue;
                    }
                    last = c;
                }
            }
            '"' => {
                let mut text = String::new();
                if chars.peek() == Some(&'"') {
                    chars.next();
                    if chars.peek() != Some(&'"') {
                        out.push(Token::Str(text));
                        continue;
                    }
                    // A text block (`"""`): up to the next `"""`.
                    chars.next();
                    let mut quotes = 0;
                    for c in chars.by_ref() {
                        quotes = if c == '"' { quotes + 1 } else { 0 };
                        if quotes == 3 {
                            break;
                        }
                        text.push(c);
                    }
                    out.push(Token::Str(text));
                    continue;
                }
                let mut escaped = false;
                for c in chars.by_ref() {
                    if !escaped && c == '"' {
                        break;
                    }
                    escaped = c == '\\' && !escaped;
                    text.push(c);
                }
                out.push(Token::Str(text));
            }
            '\'' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    if !escaped && c == '\'' {
                        break;
                    }
                    escaped = c == '\\' && !escaped;
                }
            }
            c if c.is_alphanumeric() || c == '_' || c == '$' => {
                let mut word = String::from(c);
                while let Some(&c) = chars.peek() {
                    if !(c.is_alphanumeric() || c == '_' || c == '$') {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                out.push(Token::Word(word, depth));
            }
            c if c.is_whitespace() => {}
            c => {
                if c == '}' {
                    depth = depth.saturating_sub(1);
                }
                out.push(Token::Punct(c, depth));
                if c == '{' {
                    depth += 1;
                }
            }
        }
    }
    out
}

fn word_at(tokens: &[Token], i: usize) -> Option<(&str, usize)> {
    match tokens.get(i) {
        Some(Token::Word(w, d)) => Some((w, *d)),
        _ => None,
    }
}

fn punct_at(tokens: &[Token], i: usize) -> Option<char> {
    match tokens.get(i) {
        Some(Token::Punct(c, _)) => Some(*c),
        _ => None,
    }
}

/// The dotted name of the top-level `package` clauses (Scala's chained ones joined).
fn package(tokens: &[Token]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if word_at(tokens, i) == Some(("package", 0))
            && punct_at(tokens, i.wrapping_sub(1)) != Some('.')
            && word_at(tokens, i + 1).is_some_and(|(w, _)| w != "object")
        {
            i += 1;
            while let Some((w, _)) = word_at(tokens, i) {
                parts.push(w.to_string());
                if punct_at(tokens, i + 1) != Some('.') {
                    break;
                }
                i += 2;
            }
        }
        i += 1;
    }
    parts.join(".")
}

/// The class a Kotlin file's `@file:JvmName("...")` names.
fn jvm_name(tokens: &[Token]) -> Option<String> {
    tokens.windows(6).find_map(|w| match w {
        [Token::Punct('@', _), Token::Word(file, _), Token::Punct(':', _), Token::Word(jvm, _), Token::Punct('(', _), Token::Str(name)]
            if file == "file" && jvm == "JvmName" && !name.is_empty() =>
        {
            Some(name.clone())
        }
        _ => None,
    })
}

/// Scala's main class: the first `@main def NAME`, else the first top-level object that
/// defines `main` or extends `App`, else the first top-level object.
fn scala_main(tokens: &[Token]) -> Option<String> {
    let main_method = tokens.windows(4).find_map(|w| match w {
        [Token::Punct('@', _), Token::Word(m, _), Token::Word(def, _), Token::Word(name, _)]
            if m == "main" && def == "def" =>
        {
            Some(name.clone())
        }
        _ => None,
    });
    if main_method.is_some() {
        return main_method;
    }
    let mut first = None;
    let mut current: Option<&str> = None;
    for (i, t) in tokens.iter().enumerate() {
        match t {
            Token::Word(w, 0) if w == "object" => {
                current = word_at(tokens, i + 1).map(|(n, _)| n);
                first = first.or(current);
            }
            Token::Word(w, _)
                if w == "App"
                    && word_at(tokens, i.wrapping_sub(1)).is_some_and(|(e, _)| e == "extends") =>
            {
                if let Some(c) = current {
                    return Some(c.to_string());
                }
            }
            Token::Word(w, 1)
                if w == "main"
                    && word_at(tokens, i.wrapping_sub(1)).is_some_and(|(d, _)| d == "def") =>
            {
                if let Some(c) = current {
                    return Some(c.to_string());
                }
            }
            _ => {}
        }
    }
    first.map(str::to_string)
}

/// A Java top-level type declaration.
#[derive(Debug, PartialEq)]
struct JavaClass {
    name: String,
    public: bool,
}

/// What a Java source declares at its top level.
#[derive(Debug, Default)]
struct JavaSource {
    package: String,
    classes: Vec<JavaClass>,
}

impl JavaSource {
    fn read(source: &str) -> JavaSource {
        let tokens = tokens(source, Syntax::Java);
        let mut public = false;
        let mut classes = Vec::new();
        for (i, t) in tokens.iter().enumerate() {
            match t {
                Token::Word(w, 0) if w == "public" => public = true,
                Token::Word(w, 0)
                    if matches!(w.as_str(), "class" | "interface" | "enum" | "record")
                        && punct_at(&tokens, i.wrapping_sub(1)) != Some('.') =>
                {
                    if let Some((name, _)) = word_at(&tokens, i + 1) {
                        classes.push(JavaClass {
                            name: name.to_string(),
                            public,
                        });
                    }
                    public = false;
                }
                Token::Punct(';' | '{' | '}', 0) => public = false,
                _ => {}
            }
        }
        JavaSource {
            package: package(&tokens),
            classes,
        }
    }
}

/// What an Erlang source declares: its module, and whether it exports `main/0` or `main/1`.
#[derive(Debug, Default, PartialEq)]
struct ErlangSource {
    module: Option<String>,
    exports_main0: bool,
    exports_main1: bool,
}

impl ErlangSource {
    /// Written for escript: no module, or one whose only `main` takes the args.
    fn is_escript(&self) -> bool {
        self.module.is_none() || (self.exports_main1 && !self.exports_main0)
    }

    /// Reads the attributes (`-module(...)`, `-export([...])`) that start a line, outside
    /// comments.
    fn read(source: &str) -> ErlangSource {
        let mut found = ErlangSource::default();
        let mut attribute = String::new();
        let mut in_attribute = false;
        for line in source.lines() {
            let code = strip_erlang_comment(line);
            if !in_attribute {
                let t = code.trim_start();
                let Some(rest) = t.strip_prefix('-') else {
                    continue;
                };
                let name = rest.trim_start();
                if !(name.starts_with("module") || name.starts_with("export")) {
                    continue;
                }
                attribute.clear();
                in_attribute = true;
            }
            attribute.push_str(code);
            attribute.push(' ');
            if !code.trim_end().ends_with('.') {
                continue;
            }
            in_attribute = false;
            let text: String = attribute.chars().filter(|c| !c.is_whitespace()).collect();
            if let Some(m) = text
                .strip_prefix("-module(")
                .and_then(|r| r.strip_suffix(")."))
            {
                let m = m.trim_matches('\'');
                if found.module.is_none() && !m.is_empty() {
                    found.module = Some(m.to_string());
                }
            } else if let Some(list) = text.strip_prefix("-export([") {
                for f in list.trim_end_matches(").").trim_end_matches(']').split(',') {
                    match f {
                        "main/0" => found.exports_main0 = true,
                        "main/1" => found.exports_main1 = true,
                        _ => {}
                    }
                }
            }
        }
        found
    }
}

/// `line` up to its `%` comment, outside strings, quoted atoms and `$c` characters.
fn strip_erlang_comment(line: &str) -> &str {
    let mut quote = None;
    let mut chars = line.char_indices();
    while let Some((i, c)) = chars.next() {
        match (quote, c) {
            (Some(_), '\\') => {
                chars.next();
            }
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '$') => {
                if let Some((_, '\\')) = chars.next() {
                    chars.next();
                }
            }
            (None, '%') => return &line[..i],
            (None, _) => {}
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(file: &str, source: &str, rule: EntryPoint) -> EntryNames {
        EntryNames::of(file, source, Some(rule))
    }

    #[test]
    fn the_stem_drops_folder_and_extension() {
        let n = EntryNames::of("src/solution.tar.gz", "", None);
        assert_eq!(
            (n.stem.as_str(), n.main.as_str()),
            ("solution.tar", "solution.tar")
        );
        assert_eq!(EntryNames::of("run", "", None).stem, "run");
        assert_eq!(EntryNames::of(".hidden", "", None).stem, ".hidden");
        let argv = [
            "node".to_string(),
            "{entry_stem}.js".into(),
            "{entry}".into(),
        ];
        assert_eq!(
            EntryNames::of("a b.ts", "", None).fill(&argv),
            ["node", "a b.js", "a b.ts"]
        );
        assert_eq!(
            EntryNames::of("{main}.ts", "", None).fill(&argv[2..]),
            ["{main}.ts"]
        );
    }

    #[test]
    fn java_runs_its_public_class_and_a_misnamed_one_as_a_script() {
        let src = "// public class NotThis {}\npackage a.b;\nimport java.util.*;\n@Anno(X.class)\npublic final class HelloWorld {\n  String s = \"public class Nope\";\n  class Inner {}\n}\nclass Helper {}\n";
        let n = names("HelloWorld.java", src, EntryPoint::Java);
        assert_eq!(n.main, "a.b.HelloWorld");
        assert!(!n.script);
        assert!(names("test.java", src, EntryPoint::Java).script);
        // No public class: the one named as the file, else the first.
        let plain = "class A {}\nclass Main { public static void main(String[] a) {} }";
        assert_eq!(names("Main.java", plain, EntryPoint::Java).main, "Main");
        assert_eq!(names("test.java", plain, EntryPoint::Java).main, "A");
        assert!(!names("test.java", plain, EntryPoint::Java).script);
        assert_eq!(
            EntryPoint::default_file(Some(EntryPoint::Java), "Main.java", src),
            "HelloWorld.java"
        );
        assert_eq!(
            EntryPoint::default_file(Some(EntryPoint::Java), "Main.java", plain),
            "Main.java"
        );
        let text_block = "public class T { String s = \"\"\"\n public class U {}\n\"\"\"; }";
        assert_eq!(names("T.java", text_block, EntryPoint::Java).main, "T");
    }

    #[test]
    fn kotlin_runs_the_file_class_kotlinc_makes() {
        let main = "fun main() { println(\"hi\") }";
        assert_eq!(names("main.kt", main, EntryPoint::Kotlin).main, "MainKt");
        assert_eq!(names("test.kt", main, EntryPoint::Kotlin).main, "TestKt");
        assert_eq!(
            names("my-prog.kt", main, EntryPoint::Kotlin).main,
            "My_progKt"
        );
        let packaged = "/* package x */\npackage a.b\n\nfun main() {}";
        assert_eq!(
            names("test.kt", packaged, EntryPoint::Kotlin).main,
            "a.b.TestKt"
        );
        let named = "@file:JvmName(\"Entry\")\nfun main() {}";
        assert_eq!(names("z.kt", named, EntryPoint::Kotlin).main, "Entry");
    }

    #[test]
    fn scala_runs_its_main_method_or_object() {
        let at_main = "package p\n@main def hello(): Unit = println(1)";
        assert_eq!(names("x.scala", at_main, EntryPoint::Scala).main, "p.hello");
        let object = "object Helper { def f = 1 }\nobject Main {\n  def main(args: Array[String]): Unit = ()\n}";
        assert_eq!(names("x.scala", object, EntryPoint::Scala).main, "Main");
        let app = "object Hi extends App { println(1) }";
        assert_eq!(names("x.scala", app, EntryPoint::Scala).main, "Hi");
        assert_eq!(names("x.scala", "class C", EntryPoint::Scala).main, "x");
    }

    #[test]
    fn erlang_runs_its_module_or_an_escript() {
        let module = "%% -module(no).\n-module(main).\n-export([main/0]).\nmain() -> ok.\n";
        let n = names("solution.erl", module, EntryPoint::Erlang);
        assert_eq!((n.main.as_str(), n.script), ("main", false));
        let escript = "main(_) ->\n    io:format(\"-module(x).~n\").\n";
        let n = names("test.erl", escript, EntryPoint::Erlang);
        assert!(n.script && n.header_line, "{n:?}");
        let shebang = "#!/usr/bin/env escript\nmain(_) -> ok.\n";
        assert!(!names("t.erl", shebang, EntryPoint::Erlang).header_line);
        // A module that exports only main/1 is written for escript (as Piston runs it).
        let piston = "-module(test).\n-export([\n  main/1\n]).\nmain(_) -> ok.\n";
        let n = names("test.erl", piston, EntryPoint::Erlang);
        assert!(n.script, "{n:?}");
        let both = "-module('m').\n-export([main/0, main/1]).\n";
        let n = names("x.erl", both, EntryPoint::Erlang);
        assert_eq!((n.main.as_str(), n.script), ("m", false));
    }
}
