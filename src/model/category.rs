//! The canonical category taxonomy (`canonical.md`, "Category taxonomy").
//!
//! `NP` codes are non-police matters that 110 hands to 12345 (非警务警情分流); `PM` codes are
//! police matters that 12345 hands to 110. The taxonomy is the contract itself, the same for
//! every province, so it lives in code; each province's own list is a code table in its format
//! profile.

/// Code, Chinese name, English description.
pub const TAXONOMY: &[(&str, &str, &str)] = &[
    ("NP01", "行政违法举报", "reports of administrative-law violations"),
    ("NP02", "消费纠纷", "consumer disputes"),
    ("NP03", "劳资纠纷", "labour and unpaid-wage disputes"),
    ("NP04", "水电气暖", "water, power, gas and heating failures"),
    ("NP05", "开门开锁", "lock-outs"),
    ("NP06", "政务咨询", "questions about government services"),
    ("NP07", "挪车求助", "a parked car blocks the way"),
    ("NP08", "市政设施", "municipal facilities"),
    ("NP09", "邻里纠纷", "neighbourhood disputes without violence"),
    ("NP10", "环境噪声", "noise and nuisance"),
    ("NP11", "部门协助", "a department's presence asked for at police handling (linkage.md)"),
    ("NP99", "其他非警务", "other non-police matters"),
    ("PM01", "违法犯罪线索", "crime in progress or leads on crime"),
    ("PM02", "人身安全", "a threat to life or safety"),
    ("PM03", "交通事故", "road accidents"),
    ("PM04", "治安事件", "public-order incidents"),
    ("PM05", "人员走失", "missing persons"),
    ("PM06", "电信诈骗", "telecom and online fraud"),
    ("PM07", "群体性事件", "mass incidents"),
    ("PM08", "危险物品", "dangerous goods, fire or explosion risk"),
    (
        "PM10",
        "派员协助",
        "police presence asked for at a department's on-site handling (linkage.md)",
    ),
    ("PM99", "其他警务", "other police matters"),
];

/// Which side of the linkage a category belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CategorySide {
    /// 非警务: handled by 12345.
    NonPolice,
    /// 警务: handled by 110.
    Police,
}

/// The taxonomy's Chinese name for a canonical code.
pub fn name_of(code: &str) -> Option<&'static str> {
    TAXONOMY.iter().find(|(c, _, _)| *c == code).map(|(_, name, _)| *name)
}

/// Whether `code` is one side's catch-all (其他): not an item of any transfer-item list.
pub fn is_catch_all(code: &str) -> bool {
    matches!(code, "NP99" | "PM99")
}

/// Whether `code` asks for help on site (`linkage.md`): PM10 派员协助, NP11 部门协助.
pub fn is_assist(code: &str) -> bool {
    matches!(code, "PM10" | "NP11")
}

/// Whether `code` is in the taxonomy.
pub fn is_known(code: &str) -> bool {
    name_of(code).is_some()
}

/// The side of a canonical code (by its prefix).
pub fn side_of(code: &str) -> Option<CategorySide> {
    if !is_known(code) {
        None
    } else if code.starts_with("NP") {
        Some(CategorySide::NonPolice)
    } else {
        Some(CategorySide::Police)
    }
}
