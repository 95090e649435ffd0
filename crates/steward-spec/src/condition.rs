//! Analysis conditions: `result < 0.05`, `result >= 1 && result < 10`. A deliberately small
//! language — comparisons of `result` with numbers, `&&`, `||` and parentheses — parsed when the
//! manifest is read so a typo is a validation error, not a failed rollout.

use std::borrow::Cow;
use std::fmt;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

#[derive(Clone, Debug, PartialEq)]
enum Expr {
    Cmp(Op, f64),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

/// A parsed condition, kept with its source text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Condition {
    text: String,
    expr: Expr,
}

impl Condition {
    /// Evaluates against a measured value. Any comparison with NaN is false.
    pub fn eval(&self, result: f64) -> bool {
        eval(&self.expr, result)
    }
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

fn eval(e: &Expr, r: f64) -> bool {
    match e {
        Expr::Cmp(op, n) => match op {
            Op::Lt => r < *n,
            Op::Le => r <= *n,
            Op::Gt => r > *n,
            Op::Ge => r >= *n,
            Op::Eq => r == *n,
            Op::Ne => !r.is_nan() && r != *n,
        },
        Expr::And(a, b) => eval(a, r) && eval(b, r),
        Expr::Or(a, b) => eval(a, r) || eval(b, r),
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl From<Condition> for String {
    fn from(c: Condition) -> String {
        c.text
    }
}

impl TryFrom<String> for Condition {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let tokens = tokenize(&text).map_err(|e| format!("invalid condition {text:?}: {e}"))?;
        let mut p = Parser {
            tokens: &tokens,
            pos: 0,
        };
        let expr = p.or().map_err(|e| format!("invalid condition {text:?}: {e}"))?;
        if p.pos != tokens.len() {
            return Err(format!("invalid condition {text:?}: unexpected {:?}", tokens[p.pos]));
        }
        Ok(Self { text, expr })
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Result,
    Num(f64),
    Op(Op),
    And,
    Or,
    Open,
    Close,
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i] as char;
        let two = s.get(i..i + 2).unwrap_or("");
        match c {
            ' ' | '\t' => i += 1,
            '(' => (out.push(Tok::Open), i += 1).1,
            ')' => (out.push(Tok::Close), i += 1).1,
            _ if two == "&&" => (out.push(Tok::And), i += 2).1,
            _ if two == "||" => (out.push(Tok::Or), i += 2).1,
            _ if two == "<=" => (out.push(Tok::Op(Op::Le)), i += 2).1,
            _ if two == ">=" => (out.push(Tok::Op(Op::Ge)), i += 2).1,
            _ if two == "==" => (out.push(Tok::Op(Op::Eq)), i += 2).1,
            _ if two == "!=" => (out.push(Tok::Op(Op::Ne)), i += 2).1,
            '<' => (out.push(Tok::Op(Op::Lt)), i += 1).1,
            '>' => (out.push(Tok::Op(Op::Gt)), i += 1).1,
            _ if c.is_ascii_digit() || c == '.' || c == '-' => {
                let start = i;
                i += 1;
                while i < b.len() && ((b[i] as char).is_ascii_digit() || matches!(b[i], b'.' | b'e' | b'E')) {
                    i += 1;
                }
                let n: f64 = s[start..i]
                    .parse()
                    .map_err(|_| format!("bad number {:?}", &s[start..i]))?;
                out.push(Tok::Num(n));
            }
            _ if s[i..].starts_with("result") => (out.push(Tok::Result), i += 6).1,
            _ => {
                return Err(format!(
                    "unexpected {:?} at column {} (expected result, a number, <, <=, >, >=, ==, !=, &&, ||)",
                    c,
                    i + 1
                ))
            }
        }
    }
    if out.is_empty() {
        return Err("empty".into());
    }
    Ok(out)
}

struct Parser<'a> {
    tokens: &'a [Tok],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    fn or(&mut self) -> Result<Expr, String> {
        let mut e = self.and()?;
        while self.peek() == Some(&Tok::Or) {
            self.pos += 1;
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }
    fn and(&mut self) -> Result<Expr, String> {
        let mut e = self.atom()?;
        while self.peek() == Some(&Tok::And) {
            self.pos += 1;
            e = Expr::And(Box::new(e), Box::new(self.atom()?));
        }
        Ok(e)
    }
    fn atom(&mut self) -> Result<Expr, String> {
        match self.next() {
            Some(Tok::Open) => {
                let e = self.or()?;
                match self.next() {
                    Some(Tok::Close) => Ok(e),
                    _ => Err("missing )".into()),
                }
            }
            Some(Tok::Result) => match (self.next(), self.next()) {
                (Some(Tok::Op(op)), Some(Tok::Num(n))) => Ok(Expr::Cmp(op, n)),
                _ => Err("expected `result <op> <number>`".into()),
            },
            Some(Tok::Num(n)) => match (self.next(), self.next()) {
                // `0.05 > result` is `result < 0.05`.
                (Some(Tok::Op(op)), Some(Tok::Result)) => Ok(Expr::Cmp(
                    match op {
                        Op::Lt => Op::Gt,
                        Op::Le => Op::Ge,
                        Op::Gt => Op::Lt,
                        Op::Ge => Op::Le,
                        other => other,
                    },
                    n,
                )),
                _ => Err("expected `<number> <op> result`".into()),
            },
            other => Err(format!("unexpected {other:?}")),
        }
    }
}

impl JsonSchema for Condition {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("Condition")
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "Comparisons of `result` with numbers (<, <=, >, >=, ==, !=), combined with && and ||",
            "examples": ["result < 0.05", "result >= 0.99 && result <= 1"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Condition {
        Condition::try_from(s.to_string()).unwrap()
    }

    #[test]
    fn evaluates() {
        assert!(c("result < 0.05").eval(0.01));
        assert!(!c("result < 0.05").eval(0.05));
        assert!(c("0.05 > result").eval(0.01));
        assert!(c("result >= 1 && result < 10").eval(5.0));
        assert!(!c("result >= 1 && result < 10").eval(10.0));
        assert!(c("result < 1 || (result > 5 && result != 7)").eval(6.0));
        assert!(!c("result < 1 || (result > 5 && result != 7)").eval(7.0));
        assert!(!c("result < 1").eval(f64::NAN), "NaN never satisfies a condition");
        assert!(!c("result != 1").eval(f64::NAN));
    }

    #[test]
    fn rejects() {
        for bad in [
            "",
            "result <",
            "result < x",
            "value < 1",
            "result < 1 &&",
            "(result < 1",
            "result = 1",
        ] {
            assert!(Condition::try_from(bad.to_string()).is_err(), "{bad:?}");
        }
    }
}
