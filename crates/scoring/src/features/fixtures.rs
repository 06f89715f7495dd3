//! Claims for the features' unit tests.

use hashbrown::HashMap;

use super::RawClaims;
use super::procedures::Procedures;

/// A claim: member, provider, service date key, claim date key, amount
/// and procedure lines.
pub(super) type Row<'a> = (&'a str, &'a str, i32, i32, f64, &'a [&'a str]);

/// Claims in claim id order, and their procedures.
pub(super) fn claims_of(rows: &[Row]) -> (RawClaims, Procedures) {
    let mut r = RawClaims::default();
    let (mut ids, mut lines) = (HashMap::new(), Vec::new());
    for (i, (member, provider, serviced, claimed, amount, codes)) in rows.iter().enumerate() {
        r.claim_id.push(format!("C{i:03}"));
        r.member_id.push(member.to_string());
        r.provider_id.push(provider.to_string());
        r.service_date_key.push(*serviced);
        r.claim_date_key.push(*claimed);
        r.amount.push(*amount);
        for code in *codes {
            let next = ids.len() as u32;
            lines.push((i as u32, *ids.entry(code.to_string()).or_insert(next)));
        }
    }
    (r, Procedures::new(ids, lines, rows.len()))
}
