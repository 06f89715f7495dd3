//! The default `models/` folder, embedded: what `gold init` writes, and
//! what the engine reads when a project has no models folder of its own.
//! Each library crate parses its part (`SourceCatalog::parse`,
//! `SilverCatalog::parse`, …); only this module embeds the files.

/// `models/README.md`: the format of every model file.
pub const README: &str = include_str!("../../../models/README.md");

/// `models/sources.toml`: the bronze sources.
pub const SOURCES: &str = include_str!("../../../models/sources.toml");

/// `models/dims.toml`: the SCD2 dimensions.
pub const DIMS: &str = include_str!("../../../models/dims.toml");

/// `models/scoring.toml`: the fraud-scoring configuration.
pub const SCORING: &str = include_str!("../../../models/scoring.toml");

/// `models/silver/*.toml`: one silver table each, parents first.
pub const SILVER: [(&str, &str); 6] = [
    ("diagnosis_ref.toml", include_str!("../../../models/silver/diagnosis_ref.toml")),
    ("members.toml", include_str!("../../../models/silver/members.toml")),
    ("patients.toml", include_str!("../../../models/silver/patients.toml")),
    ("providers.toml", include_str!("../../../models/silver/providers.toml")),
    ("claims.toml", include_str!("../../../models/silver/claims.toml")),
    ("medical_events.toml", include_str!("../../../models/silver/medical_events.toml")),
];

/// `models/gold/*.sql`: one regulatory aggregate each.
pub const AGGREGATES: [(&str, &str); 8] = [
    ("gold_claim_outcomes.sql", include_str!("../../../models/gold/gold_claim_outcomes.sql")),
    ("gold_dq_scorecard.sql", include_str!("../../../models/gold/gold_dq_scorecard.sql")),
    ("gold_fwa_referrals.sql", include_str!("../../../models/gold/gold_fwa_referrals.sql")),
    ("gold_loss_ratio.sql", include_str!("../../../models/gold/gold_loss_ratio.sql")),
    ("gold_member_months.sql", include_str!("../../../models/gold/gold_member_months.sql")),
    ("gold_prompt_pay.sql", include_str!("../../../models/gold/gold_prompt_pay.sql")),
    ("gold_provider_monthly_summary.sql", include_str!("../../../models/gold/gold_provider_monthly_summary.sql")),
    ("gold_utilization.sql", include_str!("../../../models/gold/gold_utilization.sql")),
];

/// Every file of the folder, by its path under `models/`.
pub fn files() -> Vec<(String, &'static str)> {
    let mut out = vec![
        ("README.md".to_string(), README),
        ("sources.toml".to_string(), SOURCES),
        ("dims.toml".to_string(), DIMS),
        ("scoring.toml".to_string(), SCORING),
    ];
    out.extend(SILVER.iter().map(|(name, body)| (format!("silver/{name}"), *body)));
    out.extend(AGGREGATES.iter().map(|(name, body)| (format!("gold/{name}"), *body)));
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_file_of_the_models_folder_is_embedded_once() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models");
        let mut on_disk = Vec::new();
        for dir in ["", "silver", "gold"] {
            for entry in std::fs::read_dir(format!("{root}/{dir}")).unwrap() {
                let path = entry.unwrap().path();
                if path.is_file() {
                    let name = path.file_name().unwrap().to_string_lossy().into_owned();
                    on_disk.push(if dir.is_empty() { name } else { format!("{dir}/{name}") });
                }
            }
        }
        on_disk.sort();
        let mut embedded: Vec<String> = super::files().into_iter().map(|(p, _)| p).collect();
        embedded.sort();
        assert_eq!(embedded, on_disk);
    }
}
