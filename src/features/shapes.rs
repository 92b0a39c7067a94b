//! String-literal shapes: what a literal looks like and how it is being assembled.

use crate::lang::Language;

/// Flags describing one string literal in its context.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shape {
    pub sql: bool,
    pub html: bool,
    pub shell: bool,
    pub url: bool,
    pub path: bool,
    pub secret: bool,
    pub key_material: bool,
    pub placeholder: bool,
    pub format: bool,
    /// Built dynamically: interpolated, concatenated, or format-applied.
    pub concat: bool,
    pub interp: bool,
    pub format_applied: bool,
    pub assigned_to_secret_name: bool,
    pub empty: bool,
}

/// Classifies a literal whose contents are `body`.
pub fn classify<'a>(
    body: &str,
    interp: bool,
    prev: Option<&str>,
    next: Option<&str>,
    before: impl Iterator<Item = &'a str>,
    lang: Option<Language>,
) -> Shape {
    let mut s = Shape { interp, empty: body.is_empty(), ..Shape::default() };
    if body.len() > 4096 {
        return s;
    }
    let lower = body.to_ascii_lowercase();
    let has = |k: &str| lower.contains(k);
    s.sql = (has("select ") && has(" from "))
        || has("insert into")
        || has("delete from")
        || (has("update ") && has(" set "))
        || has("drop table")
        || lower.starts_with("where ")
        || lower.starts_with(" where ")
        || lower.starts_with(" and ")
        || lower.starts_with(" order by ");
    s.html = lower.contains("<script")
        || lower.contains("<div")
        || lower.contains("<a href")
        || lower.contains("<img")
        || lower.contains("<p>")
        || lower.contains("<li")
        || lower.contains("<span")
        || lower.contains("<td")
        || lower.contains("<h1");
    s.shell = lower.starts_with("sh -c")
        || lower.starts_with("bash -c")
        || lower.starts_with("cmd /c")
        || lower.starts_with("cmd.exe")
        || lower.starts_with("/bin/sh")
        || lower.starts_with("/bin/bash")
        || lower.contains(" | ")
        || lower.contains(" && ")
        || lower.starts_with("rm ")
        || lower.starts_with("ping ")
        || lower.starts_with("tar ")
        || lower.starts_with("curl ")
        || lower.starts_with("convert ")
        || lower.starts_with("git ");
    s.url = lower.starts_with("http://") || lower.starts_with("https://");
    s.path =
        lower.contains("../") || lower.starts_with("/etc/") || lower.starts_with("/tmp/") || lower.starts_with("/var/");
    s.key_material = body.contains("-----BEGIN")
        || body.starts_with("AKIA")
        || body.starts_with("ghp_")
        || body.starts_with("sk_live_")
        || body.starts_with("xox")
        || body.starts_with("AIza");
    s.secret = looks_secret(body);
    s.placeholder = body.contains("%s")
        || body.contains("%d")
        || body.contains('?')
        || body.contains("{}")
        || body.contains(":id")
        || body.contains("$1")
        || body.contains("@p");
    s.format = body.contains("%s")
        || body.contains("%d")
        || body.contains("{}")
        || body.contains("{0}")
        || (body.contains('{') && !interp && body.contains('}'));
    let concat_op = |t: Option<&str>| {
        t.is_some_and(|t| {
            t == "+"
                || t == "+="
                || (t == "." && lang == Some(Language::Php))
                || (t == "<<" && matches!(lang, Some(Language::Cpp | Language::Ruby)))
                || (t == ".." && lang.is_none())
        })
    };
    s.concat = concat_op(prev) || concat_op(next);
    s.format_applied = next.is_some_and(|t| t == "%") || next.is_some_and(|t| t == ".") && lower.contains('{');
    s.assigned_to_secret_name = before.map(|t| t.to_ascii_lowercase()).any(|t| is_secretish_name(&t));
    s
}

/// Whether an identifier names a credential.
#[must_use]
pub fn is_secretish_name(lower: &str) -> bool {
    ["password", "passwd", "pwd", "secret", "token", "apikey", "api_key", "private_key", "privatekey", "credential"]
        .iter()
        .any(|k| lower.contains(k))
}

/// A literal that looks like a credential: long, no spaces, mixed character classes.
fn looks_secret(body: &str) -> bool {
    let n = body.len();
    if !(12..=200).contains(&n) || body.contains(' ') || body.contains('/') && body.contains('.') {
        return false;
    }
    let lower = body.bytes().any(|b| b.is_ascii_lowercase());
    let upper = body.bytes().any(|b| b.is_ascii_uppercase());
    let digit = body.bytes().any(|b| b.is_ascii_digit());
    let other = body.bytes().any(|b| !b.is_ascii_alphanumeric());
    let classes = [lower, upper, digit, other].iter().filter(|x| **x).count();
    let hex = n >= 32 && body.bytes().all(|b| b.is_ascii_hexdigit());
    (classes >= 3 && digit) || hex
}

impl Shape {
    /// The shape's feature names.
    pub fn names(&self) -> impl Iterator<Item = &'static str> {
        let dynamic = self.concat || self.interp || self.format_applied;
        [
            (self.sql, "sql"),
            (self.sql && self.concat, "sql+concat"),
            (self.sql && self.interp, "sql+interp"),
            (self.sql && self.format_applied, "sql+fmt"),
            (self.sql && !dynamic && self.placeholder, "sql+param"),
            (self.html, "html"),
            (self.html && dynamic, "html+dyn"),
            (self.shell, "shell"),
            (self.shell && dynamic, "shell+dyn"),
            (self.url, "url"),
            (self.url && dynamic, "url+dyn"),
            (self.path, "path"),
            (self.path && dynamic, "path+dyn"),
            (self.secret, "secret"),
            (self.secret && self.assigned_to_secret_name, "secret+named"),
            (self.key_material, "key-material"),
            (self.format, "format"),
            (self.interp, "interp"),
            (self.concat, "concat"),
            (self.empty, "empty"),
            (!self.empty && self.assigned_to_secret_name && !dynamic, "literal+named"),
        ]
        .into_iter()
        .filter(|(b, _)| *b)
        .map(|(_, n)| n)
    }

    /// The token that stands for the literal in unigrams and bigrams.
    #[must_use]
    pub fn token(&self) -> &'static str {
        if self.sql {
            "<str:sql>"
        } else if self.html {
            "<str:html>"
        } else if self.shell {
            "<str:shell>"
        } else if self.url {
            "<str:url>"
        } else if self.secret || self.key_material {
            "<str:secret>"
        } else if self.empty {
            "<str:empty>"
        } else {
            "<str>"
        }
    }
}

/// Words inside a literal (ASCII alphanumeric runs of 2 to 24 bytes).
pub fn words(body: &str) -> impl Iterator<Item = &str> {
    body.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| (2..=24).contains(&w.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(body: &str, prev: Option<&str>, next: Option<&str>) -> Shape {
        classify(body, false, prev, next, std::iter::empty(), Some(Language::Python))
    }

    #[test]
    fn sql_and_dynamic_assembly() {
        let s = c("SELECT * FROM users WHERE name = '", None, Some("+"));
        assert!(s.sql && s.concat);
        let s = c("SELECT * FROM users WHERE name = %s", None, Some(","));
        assert!(s.sql && !s.concat && s.placeholder);
        let s = c("SELECT * FROM users WHERE name = '%s'", None, Some("%"));
        assert!(s.sql && s.format_applied);
        assert!(!c("select a colour", None, None).sql);
    }

    #[test]
    fn secrets_and_key_material() {
        assert!(c("AKIAIOSFODNN7EXAMPLE", None, None).key_material);
        assert!(c("s3cr3t-Pa55w0rd-2024", None, None).secret);
        assert!(c("0123456789abcdef0123456789abcdef", None, None).secret);
        assert!(!c("hello world", None, None).secret);
        assert!(!c("application/json", None, None).secret);
    }
}
