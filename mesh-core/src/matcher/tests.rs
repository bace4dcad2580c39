use super::*;

#[test]
fn string_kinds() {
    assert!(StringMatcher::exact("abc").matches("abc"));
    assert!(!StringMatcher::exact("abc").matches("abcd"));
    assert!(StringMatcher::prefix("/api/").matches("/api/v1"));
    assert!(!StringMatcher::prefix("/api/").matches("/ap"));
    assert!(StringMatcher::suffix(".svc").matches("a.svc"));
    assert!(!StringMatcher::suffix(".svc").matches("svc"));
    assert!(StringMatcher::contains("ns/default").matches("x/ns/default/y"));
    let re = StringMatcher::regex(r"v\d+").expect("regex");
    assert!(re.matches("v12"));
    assert!(!re.matches("xv12"), "regex must match the whole string");
}

#[test]
fn ignore_case() {
    let m = StringMatcher::new(StringMatch::Prefix("/API".into()), true);
    assert!(m.matches("/api/x"));
    let m = StringMatcher::new(StringMatch::Exact("Beta".into()), true);
    assert!(m.matches("bEtA"));
    let m = StringMatcher::new(StringMatch::Contains("TeSt".into()), true);
    assert!(m.matches("a-test-b"));
}

#[test]
fn prefix_on_char_boundary_does_not_panic() {
    assert!(!StringMatcher::prefix("é").matches("\u{e8}x")); // both 2 bytes, differ
    assert!(!StringMatcher::suffix("a").matches("é"));
    assert!(!StringMatcher::prefix("ab").matches("é"));
}

#[test]
fn bad_regex_is_an_error() {
    let err = StringMatcher::regex("(").expect_err("must fail");
    assert!(matches!(err, MatcherError::BadRegex { .. }));
}

#[test]
fn header_matchers() {
    let h = HeaderMatcher::new(
        "End-User",
        HeaderValueMatch::String(StringMatcher::exact("beta-tester")),
        false,
    )
    .expect("valid");
    assert_eq!(h.name(), "end-user");
    assert!(h.matches(Some("beta-tester")));
    assert!(!h.matches(Some("other")));
    assert!(!h.matches(None));

    let inv = HeaderMatcher::new(
        "x",
        HeaderValueMatch::String(StringMatcher::exact("a")),
        true,
    )
    .expect("valid");
    assert!(inv.matches(Some("b")));
    assert!(!inv.matches(Some("a")));
    assert!(!inv.matches(None), "absent header never matches");

    let range = HeaderMatcher::new("n", HeaderValueMatch::Range { start: -10, end: 0 }, false)
        .expect("valid");
    assert!(range.matches(Some("-1")));
    assert!(!range.matches(Some("0")));
    assert!(!range.matches(Some("abc")));
    assert!(HeaderMatcher::new("n", HeaderValueMatch::Range { start: 5, end: 5 }, false).is_err());

    let present = HeaderMatcher::new("p", HeaderValueMatch::Present(true), false).expect("valid");
    assert!(present.matches(Some("")));
    assert!(!present.matches(None));
    let absent = HeaderMatcher::new("p", HeaderValueMatch::Present(false), false).expect("valid");
    assert!(absent.matches(None));
    let absent_inv = HeaderMatcher::new("p", HeaderValueMatch::Present(true), true).expect("valid");
    assert!(absent_inv.matches(None));
}
