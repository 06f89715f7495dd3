//! The National Provider Identifier's check digit (CMS: the Luhn formula
//! over the prefix `80840` and the first nine digits).

/// The check digit of an NPI whose first nine digits are `body`, or
/// `None` when `body` is not nine ASCII digits.
///
/// ```
/// assert_eq!(reference::npi_check_digit("123456789"), Some(3));
/// ```
pub fn npi_check_digit(body: &str) -> Option<u32> {
    if body.len() != 9 || !body.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut sum = 0;
    for (i, c) in format!("80840{body}").bytes().rev().enumerate() {
        let mut d = u32::from(c - b'0');
        if i % 2 == 0 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    Some((10 - sum % 10) % 10)
}

/// Whether `s` (trimmed) is a 10-digit NPI whose check digit holds.
///
/// ```
/// assert!(reference::is_npi("1234567893"));
/// assert!(!reference::is_npi("1234567890"));
/// ```
pub fn is_npi(s: &str) -> bool {
    let s = s.trim();
    s.len() == 10
        && s.is_char_boundary(9)
        && npi_check_digit(&s[..9]).is_some_and(|d| s[9..].parse::<u32>().ok() == Some(d))
}
