//! Ties: how many other records (claims, medical events) tie a claim's
//! member to its provider.

use deltalake::datafusion::prelude::SessionContext;
use hashbrown::HashMap;

use super::RawClaims;
use super::query::stream_strings;
use crate::Result;

/// claims of every feed that names both, and the medical events whose
/// provider resolved to a known one. [`Ties`] counts them.
const CLAIM_TIES_SQL: &str = r#"
SELECT member_id, provider_id FROM fact_claims
WHERE member_id IS NOT NULL AND provider_id IS NOT NULL
  AND CASE WHEN service_date_key > 0 THEN service_date_key ELSE claim_date_key END <= {to}
"#;
const EVENT_TIES_SQL: &str = r#"
SELECT patient_id AS member_id, provider_id FROM fact_medical_events
WHERE patient_id IS NOT NULL AND provider_id IS NOT NULL AND event_date_key <= {to}
"#;

/// How well each claim's member knows its provider: the member's other
/// claims with it and the medical events it recorded. An established-patient
/// visit billed at a high level by a provider the member has no other record
/// with is what upcoding looks like; an honest practice's high-level visits
/// are mostly with its own patients.
struct Ties<'a> {
    members: HashMap<&'a str, u32>,
    providers: HashMap<&'a str, u32>,
    counts: HashMap<u64, u32>,
}

impl<'a> Ties<'a> {
    /// Ties among the members and providers of `r`'s claims (claims
    /// without a member or a provider take no part).
    fn new(r: &'a RawClaims) -> Self {
        let (mut members, mut providers) = (HashMap::new(), HashMap::new());
        for (m, p) in r.member_id.iter().zip(&r.provider_id) {
            if !p.is_empty() && !m.starts_with('#') {
                let next = members.len() as u32;
                members.entry(m.as_str()).or_insert(next);
                let next = providers.len() as u32;
                providers.entry(p.as_str()).or_insert(next);
            }
        }
        Self { members, providers, counts: HashMap::new() }
    }

    fn key(&self, member: &str, provider: &str) -> Option<u64> {
        let (m, p) = (self.members.get(member)?, self.providers.get(provider)?);
        Some((u64::from(*m) << 32) | u64::from(*p))
    }

    /// One record of `member` with `provider`.
    fn add(&mut self, member: &str, provider: &str) {
        if let Some(k) = self.key(member, provider) {
            *self.counts.entry(k).or_default() += 1;
        }
    }

    /// Per claim of `r`: the records of its member with its provider other
    /// than the claim itself (which the records include).
    fn others(&self, r: &RawClaims) -> Vec<f64> {
        r.member_id
            .iter()
            .zip(&r.provider_id)
            .map(|(m, p)| {
                let n = self.key(m, p).and_then(|k| self.counts.get(&k)).copied().unwrap_or(0);
                f64::from(n.saturating_sub(1))
            })
            .collect()
    }
}

/// [`Ties::others`] for the claims of `r`, read from the claims and, when
/// `events`, the medical events serviced up to `to`.
pub(super) async fn ties(ctx: &SessionContext, r: &RawClaims, to: i32, events: bool) -> Result<Vec<f64>> {
    let mut ties = Ties::new(r);
    let to = to.to_string();
    let mut sqls = vec![CLAIM_TIES_SQL.replace("{to}", &to)];
    if events {
        sqls.push(EVENT_TIES_SQL.replace("{to}", &to));
    }
    for sql in sqls {
        stream_strings(ctx, &sql, "member_id", "provider_id", |m, p| ties.add(m, p)).await?;
    }
    Ok(ties.others(r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::fixtures::claims_of;

    #[test]
    fn a_claims_ties_are_its_members_other_records_with_its_provider() {
        let (r, _) = claims_of(&[
            ("m1", "A", 1, 1, 10.0, &["99215"]),
            ("m1", "A", 2, 2, 10.0, &["99213"]),
            ("m1", "B", 2, 2, 10.0, &["99215"]),
            ("m2", "A", 3, 3, 10.0, &["99215"]),
            ("#C004", "A", 3, 3, 10.0, &["99215"]),
            ("m2", "", 3, 3, 10.0, &["99215"]),
        ]);
        let mut ties = Ties::new(&r);
        // The records: every claim above, an event of m2 at A, an event of
        // m1 at a provider none of the claims names, and m3's claim at A.
        for (m, p) in [("m1", "A"), ("m1", "A"), ("m1", "B"), ("m2", "A"), ("m2", "A"), ("m1", "Z"), ("m3", "A")] {
            ties.add(m, p);
        }
        // m1 saw A twice, so each of those claims has one other record; B
        // once; m2's claim at A has the event. Claims without a member or
        // a provider have no ties.
        assert_eq!(ties.others(&r), [1.0, 1.0, 0.0, 1.0, 0.0, 0.0]);
    }
}
