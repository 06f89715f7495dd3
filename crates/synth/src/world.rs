//! The insurer's entities and how they change from day to day.

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime};
use rand::Rng;
use rand::seq::SliceRandom;
use rand_distr::{Distribution, Normal, Poisson};

use crate::codes::Sex;
use crate::flow::Flow;
use crate::rng::{Domain, Stream, stream};

const FIRST_NAMES: &[&str] = &[
    "James",
    "Mary",
    "Robert",
    "Patricia",
    "John",
    "Jennifer",
    "Michael",
    "Linda",
    "David",
    "Elizabeth",
    "William",
    "Barbara",
    "Richard",
    "Susan",
    "Joseph",
    "Jessica",
    "Thomas",
    "Sarah",
    "Charles",
    "Karen",
    "Christopher",
    "Lisa",
    "Daniel",
    "Nancy",
    "Matthew",
    "Betty",
    "Anthony",
    "Sandra",
    "Mark",
    "Margaret",
    "Donald",
    "Ashley",
    "Steven",
    "Kimberly",
    "Andrew",
    "Emily",
    "Paul",
    "Donna",
    "Joshua",
    "Michelle",
    "Kenneth",
    "Carol",
    "Kevin",
    "Amanda",
    "Brian",
    "Melissa",
    "George",
    "Deborah",
    "Timothy",
    "Stephanie",
    "Ronald",
    "Rebecca",
    "Jason",
    "Sharon",
    "Edward",
    "Laura",
    "Jeffrey",
    "Cynthia",
    "Ryan",
    "Dorothy",
    "Jacob",
    "Amy",
    "Gary",
    "Kathleen",
    "Nicholas",
    "Angela",
    "Eric",
    "Shirley",
    "Jonathan",
    "Emma",
    "Stephen",
    "Brenda",
    "Larry",
    "Pamela",
    "Justin",
    "Nicole",
    "Scott",
    "Anna",
    "Brandon",
    "Samantha",
    "Benjamin",
    "Katherine",
    "Samuel",
    "Christine",
    "Gregory",
    "Debra",
    "Alexander",
    "Rachel",
    "Patrick",
    "Carolyn",
    "Frank",
    "Janet",
    "Raymond",
    "Maria",
    "Jack",
    "Olivia",
    "Dennis",
    "Heather",
    "Jerry",
    "Helen",
    "Tyler",
    "Catherine",
    "Aaron",
    "Diane",
    "José",
    "Julie",
    "Adam",
    "Victoria",
    "Nathan",
    "Joyce",
    "Henry",
    "Lauren",
    "Zachary",
    "Kelly",
    "Douglas",
    "Christina",
    "Peter",
    "Ruth",
    "Kyle",
    "Joan",
    "Noah",
    "Virginia",
    "Ethan",
    "Judith",
    "Jeremy",
    "Evelyn",
    "Christian",
    "Hannah",
    "Walter",
    "Andrea",
    "Keith",
    "Megan",
    "Austin",
    "Cheryl",
    "Roger",
    "Jacqueline",
    "Terry",
    "Madison",
    "Sean",
    "Teresa",
    "Gerald",
    "Abigail",
    "Carl",
    "Sophia",
    "Dylan",
    "Martha",
    "Harold",
    "Sara",
    "Jordan",
    "Gloria",
    "Jesse",
    "Janice",
    "Bryan",
    "Kathryn",
    "Lawrence",
    "Ann",
    "Arthur",
    "Isabella",
    "Gabriel",
    "Judy",
    "Bruce",
    "Charlotte",
    "Logan",
    "Julia",
    "Billy",
    "Grace",
    "Joe",
    "Amber",
    "Alan",
    "Alice",
    "Juan",
    "Jean",
    "Elijah",
    "Denise",
    "Willie",
    "Frances",
    "Albert",
    "Danielle",
    "Wayne",
    "Marilyn",
    "Randy",
    "Natalie",
    "Mason",
    "Beverly",
    "Vincent",
    "Diana",
    "Liam",
    "Brittany",
    "Roy",
    "Theresa",
    "Bobby",
    "Kayla",
    "Caleb",
    "Alexis",
    "Bradley",
    "Doris",
    "Russell",
    "Lori",
    "Lucas",
    "Tiffany",
];
const LAST_NAMES: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Sanchez",
    "Clark",
    "Ramirez",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Torres",
    "Nguyen",
    "Hill",
    "Flores",
    "Green",
    "Adams",
    "Nelson",
    "Baker",
    "Hall",
    "Rivera",
    "Campbell",
    "Mitchell",
    "Carter",
    "Roberts",
    "Gomez",
    "Phillips",
    "Evans",
    "Turner",
    "Diaz",
    "Parker",
    "Cruz",
    "Edwards",
    "Collins",
    "Reyes",
    "Stewart",
    "Morris",
    "Morales",
    "Murphy",
    "Cook",
    "Rogers",
    "Gutierrez",
    "Ortiz",
    "Morgan",
    "Cooper",
    "Peterson",
    "Bailey",
    "Reed",
    "Kelly",
    "Howard",
    "Ramos",
    "Kim",
    "Cox",
    "Ward",
    "Richardson",
    "Watson",
    "Brooks",
    "Chavez",
    "Wood",
    "James",
    "Bennett",
    "Gray",
    "Mendoza",
    "Ruiz",
    "Hughes",
    "Price",
    "Alvarez",
    "Castillo",
    "Sanders",
    "Patel",
    "Myers",
    "Long",
    "Ross",
    "Foster",
    "Jimenez",
    "O'Brien",
    "Sullivan",
    "Russell",
    "Fischer",
    "Kowalski",
    "Novak",
    "Schmidt",
    "Yamamoto",
    "Chen",
    "Okafor",
];
const EMAIL_DOMAINS: &[&str] = &["example.com", "mail.example.org", "inbox.example.net", "post.example.com"];

pub(crate) const REGIONS: &[&str] = &["Northeast", "Northwest", "Southeast", "Southwest"];
pub(crate) const PATIENT_REGIONS: &[&str] = &["NORTHEAST", "NORTHWEST", "SOUTHEAST", "SOUTHWEST"];
const REGION_STATES: &[&[(&str, &[&str])]] = &[
    &[
        ("NY", &["New York", "Buffalo", "Albany"]),
        ("MA", &["Boston", "Worcester"]),
        ("PA", &["Philadelphia", "Pittsburgh"]),
        ("NJ", &["Newark", "Trenton"]),
    ],
    &[
        ("WA", &["Seattle", "Spokane", "Tacoma"]),
        ("OR", &["Portland", "Eugene"]),
        ("ID", &["Boise"]),
        ("MT", &["Billings", "Missoula"]),
    ],
    &[
        ("FL", &["Miami", "Tampa", "Orlando"]),
        ("GA", &["Atlanta", "Savannah"]),
        ("NC", &["Charlotte", "Raleigh"]),
        ("VA", &["Richmond", "Norfolk"]),
    ],
    &[
        ("AZ", &["Phoenix", "Tucson"]),
        ("NM", &["Albuquerque", "Santa Fe"]),
        ("TX", &["Houston", "Dallas", "Austin", "El Paso"]),
        ("NV", &["Las Vegas", "Reno"]),
    ],
];
const STREETS: &[&str] = &[
    "Main St",
    "Oak Ave",
    "Maple Dr",
    "Cedar Ln",
    "Park Blvd",
    "Washington St",
    "Lake Rd",
    "Hillcrest Way",
    "Elm St",
    "Medical Center Dr",
];
/// Plan types; Medicaid and Medicare Advantage are the lines of business
/// with prompt-pay rules.
pub(crate) const PLAN_TYPES: &[(&str, u32)] =
    &[("HMO", 30), ("PPO", 30), ("EPO", 10), ("Medicaid", 18), ("Medicare Advantage", 12)];
pub(crate) const PATIENT_PLANS: &[&str] = &["Bronze", "Silver", "Gold", "Platinum"];
pub(crate) const SPECIALTIES: &[(&str, u32)] = &[
    ("Family Medicine", 30),
    ("Internal Medicine", 20),
    ("Cardiology", 8),
    ("Radiology", 6),
    ("Laboratory", 6),
    ("Physical Therapy", 6),
    ("Orthopedics", 6),
    ("Dermatology", 5),
    ("Psychiatry", 5),
    ("Oncology", 3),
    ("Emergency Medicine", 5),
];
pub(crate) const PRIMARY_CARE: &[&str] = &["Family Medicine", "Internal Medicine"];
pub(crate) const EXTERNAL_FACILITIES: &[&str] = &[
    "St. Mary Community Clinic",
    "Riverside Urgent Care",
    "County Health Dept",
    "Lakeside Walk-In Center",
    "Out-of-network Lab",
];

pub(crate) fn date_at(date: NaiveDate, secs: u32) -> NaiveDateTime {
    date.and_time(NaiveTime::MIN) + Duration::seconds(i64::from(secs))
}

/// An item drawn with probability proportional to its weight.
pub(crate) fn weighted<'a, T>(rng: &mut Stream, items: &'a [(T, u32)]) -> &'a T {
    let total: u32 = items.iter().map(|i| i.1).sum();
    let mut pick = rng.gen_range(0..total);
    for (item, w) in items {
        if pick < *w {
            return item;
        }
        pick -= w;
    }
    &items[items.len() - 1].0
}

/// What `members.csv` says about a member on one day.
#[derive(Clone, Debug)]
pub(crate) struct MemberState {
    pub(crate) region: usize,
    pub(crate) plan: usize,
    pub(crate) email: String,
    pub(crate) active: Option<bool>,
    pub(crate) last_updated: NaiveDateTime,
}

/// A member's fixed attributes and day-by-day state (`None`: not in that
/// day's extract, because not enrolled yet or gone).
pub(crate) struct Member {
    pub(crate) index: u64,
    pub(crate) id: String,
    pub(crate) first: &'static str,
    pub(crate) last: &'static str,
    pub(crate) dob: NaiveDate,
    pub(crate) gender: char,
    pub(crate) effective: NaiveDate,
    pub(crate) join_day: u32,
    pub(crate) days: Vec<Option<MemberState>>,
    /// The member whose coverage had ended before the history starts.
    pub(crate) terminated_on: Option<NaiveDate>,
}

pub(crate) fn member_id(index: u64) -> String {
    format!("M{:08}", index + 1)
}

impl Member {
    /// The member and its random stream, positioned after the member's own
    /// history, for everything else generated about it.
    pub(crate) fn generate(seed: u64, index: u64, start: NaiveDate, days: u32, flow: Flow) -> (Self, Stream) {
        let mut rng = stream(seed, Domain::Member, index);
        let gender = match rng.gen_range(0..100) {
            0..=48 => 'M',
            49..=97 => 'F',
            _ => 'O',
        };
        // FIRST_NAMES alternates names mostly given to men and to women.
        let pick = rng.gen_range(0..FIRST_NAMES.len() / 2) * 2;
        let first = FIRST_NAMES[match gender {
            'M' => pick,
            'F' => pick + 1,
            _ => pick + rng.gen_range(0..2),
        }];
        let last = LAST_NAMES[rng.gen_range(0..LAST_NAMES.len())];
        let age: f64 = Normal::new(45.0, 15.0).expect("valid normal").sample(&mut rng);
        let age_days = (age.clamp(18.0, 85.0) * 365.25) as i64 + rng.gen_range(0..365);
        let dob = start - Duration::days(age_days);
        let join_day = if days > 1 && rng.gen_bool(0.06) { rng.gen_range(1..days) } else { 0 };
        let join_date = start + Duration::days(i64::from(join_day));
        let effective = if join_day > 0 { join_date } else { start - Duration::days(rng.gen_range(1..5 * 365)) };
        let mut email_n = rng.gen_range(1..999u32);
        let email_for = |n: u32, rng: &mut Stream| {
            format!(
                "{}.{}{}@{}",
                first.to_lowercase(),
                last.to_lowercase().replace('\'', ""),
                n,
                EMAIL_DOMAINS[rng.gen_range(0..EMAIL_DOMAINS.len())]
            )
        };
        let active = match rng.gen_range(0..100) {
            0..=86 => Some(true),
            87..=93 => Some(false),
            _ => None,
        };
        let last_updated = if join_day > 0 {
            date_at(join_date, rng.gen_range(3600..20 * 3600))
        } else {
            let lo = (start - effective).num_days().max(1);
            date_at(start - Duration::days(rng.gen_range(1..=lo)), rng.gen_range(3600..20 * 3600))
        };
        let terminated_on = (active == Some(false) && join_day == 0).then(|| last_updated.date());
        let mut state = MemberState {
            region: rng.gen_range(0..REGIONS.len()),
            plan: PLAN_TYPES.iter().position(|p| p.0 == *weighted(&mut rng, PLAN_TYPES)).unwrap_or(0),
            email: email_for(email_n, &mut rng),
            active,
            last_updated,
        };
        let mut out = vec![None; days as usize];
        let mut present = true;
        let mut back_on: Option<u32> = None;
        for d in join_day..days {
            let date = start + Duration::days(i64::from(d));
            if d > join_day {
                if present && rng.gen_bool(flow.member_leaves()) {
                    present = false;
                    back_on = rng.gen_bool(0.6).then(|| d + rng.gen_range(1..5));
                } else if !present && back_on == Some(d) {
                    present = true;
                    state.last_updated = date_at(date, rng.gen_range(3600..20 * 3600));
                }
                if present && rng.gen_bool(flow.member_changes()) {
                    // One to four of plan, region, email and the active flag change.
                    let mut fields = [0, 1, 2, 3];
                    fields.shuffle(&mut rng);
                    for f in &fields[..rng.gen_range(1..=4)] {
                        match f {
                            0 => state.plan = (state.plan + rng.gen_range(1..PLAN_TYPES.len())) % PLAN_TYPES.len(),
                            1 => state.region = (state.region + rng.gen_range(1..REGIONS.len())) % REGIONS.len(),
                            2 => {
                                email_n += rng.gen_range(1..50);
                                state.email = email_for(email_n, &mut rng);
                            }
                            _ => {
                                state.active = match state.active {
                                    Some(true) => Some(false),
                                    Some(false) => None,
                                    None => Some(true),
                                }
                            }
                        }
                    }
                    state.last_updated = date_at(date, rng.gen_range(3600..20 * 3600));
                }
            }
            if present {
                out[d as usize] = Some(state.clone());
            }
        }
        (
            Self {
                index,
                id: member_id(index),
                first,
                last,
                dob,
                gender,
                effective,
                join_day,
                days: out,
                terminated_on,
            },
            rng,
        )
    }

    pub(crate) fn name(&self) -> String {
        format!("{} {}", self.first, self.last)
    }

    pub(crate) fn age_on(&self, date: NaiveDate) -> u32 {
        date.years_since(self.dob).unwrap_or(0)
    }

    pub(crate) fn sex(&self) -> Option<Sex> {
        match self.gender {
            'M' => Some(Sex::Male),
            'F' => Some(Sex::Female),
            _ => None,
        }
    }

    /// Days on which the member is in the extract.
    pub(crate) fn present_days(&self) -> impl Iterator<Item = u32> + '_ {
        self.days.iter().enumerate().filter(|(_, s)| s.is_some()).map(|(d, _)| d as u32)
    }
}

/// The care-management (EHR) view of a member.
#[derive(Clone, Debug)]
pub(crate) struct PatientState {
    pub(crate) bmi: f64,
    pub(crate) smoker: bool,
    pub(crate) children: u32,
    pub(crate) plan: usize,
}

impl PatientState {
    /// Annual premium from the risk factors, the shape of the classic
    /// insurance data set: age, BMI over 30, smoking and children.
    pub(crate) fn charges(&self, age: u32, rng: &mut Stream) -> f64 {
        let base = 2_500.0
            + 255.0 * f64::from(age)
            + 330.0 * (self.bmi - 30.0).max(0.0) * if self.smoker { 3.0 } else { 1.0 }
            + 480.0 * f64::from(self.children)
            + if self.smoker { 20_000.0 } else { 0.0 };
        let noise: f64 = Normal::new(1.0, 0.08).expect("valid normal").sample(rng);
        (base * noise.max(0.6) * 100.0).round() / 100.0
    }
}

/// Patient rows to emit: the first full record, then each change.
pub(crate) struct Patient {
    pub(crate) first_day: u32,
    pub(crate) rows: Vec<(u32, PatientState, NaiveDateTime)>,
}

impl Patient {
    pub(crate) fn generate(member: &Member, rng: &mut Stream, start: NaiveDate, days: u32, flow: Flow) -> Self {
        let age = member.age_on(start);
        let bmi: f64 = Normal::new(28.0, 6.0).expect("valid normal").sample(rng);
        let smoke_p = match age {
            0..=29 => 0.24,
            30..=49 => 0.2,
            50..=64 => 0.15,
            _ => 0.09,
        };
        let children = Poisson::new(1.2).expect("valid poisson").sample(rng) as u32;
        let mut state = PatientState {
            bmi: (bmi.clamp(16.0, 50.0) * 10.0).round() / 10.0,
            smoker: rng.gen_bool(smoke_p),
            children,
            plan: rng.gen_range(0..PATIENT_PLANS.len()),
        };
        let first_day = member.join_day;
        let mut rows = vec![(
            first_day,
            state.clone(),
            date_at(start + Duration::days(i64::from(first_day)), rng.gen_range(0..86_000)),
        )];
        for d in first_day + 1..days {
            if rng.gen_bool(flow.patient_changes()) {
                match rng.gen_range(0..4) {
                    0 => {
                        state.bmi = ((state.bmi + rng.gen_range(-2.5..2.5f64)).clamp(16.0, 50.0) * 10.0).round() / 10.0
                    }
                    1 => state.smoker = !state.smoker,
                    2 => state.children += 1,
                    _ => state.plan = (state.plan + rng.gen_range(1..PATIENT_PLANS.len())) % PATIENT_PLANS.len(),
                }
                rows.push((d, state.clone(), date_at(start + Duration::days(i64::from(d)), rng.gen_range(0..86_000))));
            }
        }
        Self { first_day, rows }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Location {
    pub(crate) address: String,
    pub(crate) city: String,
    pub(crate) state: String,
}

#[derive(Clone, Debug)]
pub(crate) struct ProviderState {
    pub(crate) specialties: Vec<&'static str>,
    pub(crate) locations: Vec<Location>,
    pub(crate) active: bool,
    pub(crate) last_verified: NaiveDate,
}

pub(crate) struct Provider {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) tin: String,
    /// The first record, then (day, record) for each change.
    pub(crate) versions: Vec<(u32, ProviderState)>,
}

/// A 10-digit NPI with a valid check digit.
pub(crate) fn npi(index: u64) -> String {
    let body = (100_000_000 + (index * 104_729) % 900_000_000).to_string();
    let check = reference::npi_check_digit(&body).expect("nine digits");
    format!("{body}{check}")
}

fn location(rng: &mut Stream, region: usize) -> Location {
    let states = REGION_STATES[region];
    let (state, cities) = states[rng.gen_range(0..states.len())];
    Location {
        address: format!("{} {}", rng.gen_range(10..9999), STREETS[rng.gen_range(0..STREETS.len())]),
        city: cities[rng.gen_range(0..cities.len())].to_string(),
        state: state.to_string(),
    }
}

impl Provider {
    pub(crate) fn generate(seed: u64, index: u64, start: NaiveDate, days: u32) -> Self {
        let mut rng = stream(seed, Domain::Provider, index);
        let region = rng.gen_range(0..REGIONS.len());
        let main = *weighted(&mut rng, SPECIALTIES);
        let mut specialties = vec![main];
        if rng.gen_bool(0.25) {
            let other = *weighted(&mut rng, SPECIALTIES);
            if other != main {
                specialties.push(other);
            }
        }
        let name = if rng.gen_bool(0.6) {
            format!(
                "Dr. {} {}",
                FIRST_NAMES[rng.gen_range(0..FIRST_NAMES.len())],
                LAST_NAMES[rng.gen_range(0..LAST_NAMES.len())]
            )
        } else {
            format!("{} {} Associates", LAST_NAMES[rng.gen_range(0..LAST_NAMES.len())], main)
        };
        let tin = format!("{:02}-{:07}", rng.gen_range(10..99), rng.gen_range(0..10_000_000));
        let locations = (0..rng.gen_range(1..=3)).map(|_| location(&mut rng, region)).collect();
        let mut state = ProviderState {
            specialties,
            locations,
            active: rng.gen_bool(0.95),
            last_verified: start - Duration::days(rng.gen_range(1..720)),
        };
        let mut versions = vec![(0, state.clone())];
        for d in 1..days {
            if rng.gen_bool(0.01) {
                let date = start + Duration::days(i64::from(d));
                match rng.gen_range(0..4) {
                    0 => state.locations.push(location(&mut rng, region)),
                    1 if state.locations.len() > 1 => {
                        state.locations.remove(rng.gen_range(0..state.locations.len()));
                    }
                    2 => {
                        let extra = *weighted(&mut rng, SPECIALTIES);
                        if !state.specialties.contains(&extra) {
                            state.specialties.push(extra);
                        }
                    }
                    _ => state.locations[0] = location(&mut rng, region),
                }
                state.last_verified = date;
                versions.push((d, state.clone()));
            }
        }
        Self { id: npi(index), name, tin, versions }
    }

    pub(crate) fn main_specialty(&self) -> &'static str {
        self.versions[0].1.specialties[0]
    }
}

pub(crate) fn is_weekend(date: NaiveDate) -> bool {
    date.weekday().number_from_monday() >= 6
}
