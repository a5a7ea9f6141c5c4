//! Place names as the platform stores them: Chinese country and continent names for ISO country
//! codes, Chinese names for China's provinces given in English, and the legacy normalisation of
//! Chinese province and city names (`docs/geodata.md`).
//!
//! The tables are small, static and sorted, so a lookup is a binary search with no allocation,
//! and the names are static [`ArcStr`]s that a [`super::Geo`] holds without allocating.
//! Country names are the short forms in everyday Simplified Chinese use (韩国, not 大韩民国),
//! the same forms the GeoIP2 `zh-CN` names use today; continents follow MaxMind's assignment so
//! that a flat database and a GeoIP2 database give the same continent for a country. Hong Kong,
//! Macao and Taiwan keep their own codes here, as in the MaxMind-DB databases: their country is
//! 香港 / 澳门 / 台湾 in a single database's answer, and the platform's view (country 中国,
//! province 香港 / 澳门 / 台湾, or the other way round) is applied after the merge
//! (`super::lookup`, `[geo] china`).

use arcstr::{literal, ArcStr};
/// A continent, as MaxMind codes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Continent {
    /// Africa (AF).
    Africa,
    /// Antarctica (AN).
    Antarctica,
    /// Asia (AS).
    Asia,
    /// Europe (EU).
    Europe,
    /// North America (NA).
    NorthAmerica,
    /// Oceania (OC).
    Oceania,
    /// South America (SA).
    SouthAmerica,
}

impl Continent {
    /// The Simplified Chinese name, as GeoIP2's `zh-CN` names spell it (static: free to clone).
    pub fn chinese_name(self) -> ArcStr {
        match self {
            Self::Africa => literal!("非洲"),
            Self::Antarctica => literal!("南极洲"),
            Self::Asia => literal!("亚洲"),
            Self::Europe => literal!("欧洲"),
            Self::NorthAmerica => literal!("北美洲"),
            Self::Oceania => literal!("大洋洲"),
            Self::SouthAmerica => literal!("南美洲"),
        }
    }
}

use Continent::{
    Africa as AF, Antarctica as AN, Asia as AS, Europe as EU, NorthAmerica as NA, Oceania as OC,
    SouthAmerica as SA,
};

/// ISO 3166-1 alpha-2 code (plus `XK`, Kosovo, which DB-IP uses), Chinese name, continent.
/// Sorted by code; a unit test keeps it sorted and unique.
static COUNTRIES: &[(&str, ArcStr, Continent)] = &[
    ("AD", literal!("安道尔"), EU),
    ("AE", literal!("阿联酋"), AS),
    ("AF", literal!("阿富汗"), AS),
    ("AG", literal!("安提瓜和巴布达"), NA),
    ("AI", literal!("安圭拉"), NA),
    ("AL", literal!("阿尔巴尼亚"), EU),
    ("AM", literal!("亚美尼亚"), AS),
    ("AO", literal!("安哥拉"), AF),
    ("AQ", literal!("南极洲"), AN),
    ("AR", literal!("阿根廷"), SA),
    ("AS", literal!("美属萨摩亚"), OC),
    ("AT", literal!("奥地利"), EU),
    ("AU", literal!("澳大利亚"), OC),
    ("AW", literal!("阿鲁巴"), NA),
    ("AX", literal!("奥兰群岛"), EU),
    ("AZ", literal!("阿塞拜疆"), AS),
    ("BA", literal!("波黑"), EU),
    ("BB", literal!("巴巴多斯"), NA),
    ("BD", literal!("孟加拉国"), AS),
    ("BE", literal!("比利时"), EU),
    ("BF", literal!("布基纳法索"), AF),
    ("BG", literal!("保加利亚"), EU),
    ("BH", literal!("巴林"), AS),
    ("BI", literal!("布隆迪"), AF),
    ("BJ", literal!("贝宁"), AF),
    ("BL", literal!("圣巴泰勒米"), NA),
    ("BM", literal!("百慕大"), NA),
    ("BN", literal!("文莱"), AS),
    ("BO", literal!("玻利维亚"), SA),
    ("BQ", literal!("荷兰加勒比区"), NA),
    ("BR", literal!("巴西"), SA),
    ("BS", literal!("巴哈马"), NA),
    ("BT", literal!("不丹"), AS),
    ("BV", literal!("布韦岛"), AN),
    ("BW", literal!("博茨瓦纳"), AF),
    ("BY", literal!("白俄罗斯"), EU),
    ("BZ", literal!("伯利兹"), NA),
    ("CA", literal!("加拿大"), NA),
    ("CC", literal!("科科斯（基林）群岛"), AS),
    ("CD", literal!("刚果（金）"), AF),
    ("CF", literal!("中非"), AF),
    ("CG", literal!("刚果（布）"), AF),
    ("CH", literal!("瑞士"), EU),
    ("CI", literal!("科特迪瓦"), AF),
    ("CK", literal!("库克群岛"), OC),
    ("CL", literal!("智利"), SA),
    ("CM", literal!("喀麦隆"), AF),
    ("CN", literal!("中国"), AS),
    ("CO", literal!("哥伦比亚"), SA),
    ("CR", literal!("哥斯达黎加"), NA),
    ("CU", literal!("古巴"), NA),
    ("CV", literal!("佛得角"), AF),
    ("CW", literal!("库拉索"), NA),
    ("CX", literal!("圣诞岛"), OC),
    ("CY", literal!("塞浦路斯"), EU),
    ("CZ", literal!("捷克"), EU),
    ("DE", literal!("德国"), EU),
    ("DJ", literal!("吉布提"), AF),
    ("DK", literal!("丹麦"), EU),
    ("DM", literal!("多米尼克"), NA),
    ("DO", literal!("多米尼加"), NA),
    ("DZ", literal!("阿尔及利亚"), AF),
    ("EC", literal!("厄瓜多尔"), SA),
    ("EE", literal!("爱沙尼亚"), EU),
    ("EG", literal!("埃及"), AF),
    ("EH", literal!("西撒哈拉"), AF),
    ("ER", literal!("厄立特里亚"), AF),
    ("ES", literal!("西班牙"), EU),
    ("ET", literal!("埃塞俄比亚"), AF),
    ("FI", literal!("芬兰"), EU),
    ("FJ", literal!("斐济"), OC),
    ("FK", literal!("福克兰群岛"), SA),
    ("FM", literal!("密克罗尼西亚联邦"), OC),
    ("FO", literal!("法罗群岛"), EU),
    ("FR", literal!("法国"), EU),
    ("GA", literal!("加蓬"), AF),
    ("GB", literal!("英国"), EU),
    ("GD", literal!("格林纳达"), NA),
    ("GE", literal!("格鲁吉亚"), AS),
    ("GF", literal!("法属圭亚那"), SA),
    ("GG", literal!("根西岛"), EU),
    ("GH", literal!("加纳"), AF),
    ("GI", literal!("直布罗陀"), EU),
    ("GL", literal!("格陵兰"), NA),
    ("GM", literal!("冈比亚"), AF),
    ("GN", literal!("几内亚"), AF),
    ("GP", literal!("瓜德罗普"), NA),
    ("GQ", literal!("赤道几内亚"), AF),
    ("GR", literal!("希腊"), EU),
    ("GS", literal!("南乔治亚和南桑威奇群岛"), AN),
    ("GT", literal!("危地马拉"), NA),
    ("GU", literal!("关岛"), OC),
    ("GW", literal!("几内亚比绍"), AF),
    ("GY", literal!("圭亚那"), SA),
    ("HK", literal!("香港"), AS),
    ("HM", literal!("赫德岛和麦克唐纳群岛"), AN),
    ("HN", literal!("洪都拉斯"), NA),
    ("HR", literal!("克罗地亚"), EU),
    ("HT", literal!("海地"), NA),
    ("HU", literal!("匈牙利"), EU),
    ("ID", literal!("印度尼西亚"), AS),
    ("IE", literal!("爱尔兰"), EU),
    ("IL", literal!("以色列"), AS),
    ("IM", literal!("马恩岛"), EU),
    ("IN", literal!("印度"), AS),
    ("IO", literal!("英属印度洋领地"), AS),
    ("IQ", literal!("伊拉克"), AS),
    ("IR", literal!("伊朗"), AS),
    ("IS", literal!("冰岛"), EU),
    ("IT", literal!("意大利"), EU),
    ("JE", literal!("泽西岛"), EU),
    ("JM", literal!("牙买加"), NA),
    ("JO", literal!("约旦"), AS),
    ("JP", literal!("日本"), AS),
    ("KE", literal!("肯尼亚"), AF),
    ("KG", literal!("吉尔吉斯斯坦"), AS),
    ("KH", literal!("柬埔寨"), AS),
    ("KI", literal!("基里巴斯"), OC),
    ("KM", literal!("科摩罗"), AF),
    ("KN", literal!("圣基茨和尼维斯"), NA),
    ("KP", literal!("朝鲜"), AS),
    ("KR", literal!("韩国"), AS),
    ("KW", literal!("科威特"), AS),
    ("KY", literal!("开曼群岛"), NA),
    ("KZ", literal!("哈萨克斯坦"), AS),
    ("LA", literal!("老挝"), AS),
    ("LB", literal!("黎巴嫩"), AS),
    ("LC", literal!("圣卢西亚"), NA),
    ("LI", literal!("列支敦士登"), EU),
    ("LK", literal!("斯里兰卡"), AS),
    ("LR", literal!("利比里亚"), AF),
    ("LS", literal!("莱索托"), AF),
    ("LT", literal!("立陶宛"), EU),
    ("LU", literal!("卢森堡"), EU),
    ("LV", literal!("拉脱维亚"), EU),
    ("LY", literal!("利比亚"), AF),
    ("MA", literal!("摩洛哥"), AF),
    ("MC", literal!("摩纳哥"), EU),
    ("MD", literal!("摩尔多瓦"), EU),
    ("ME", literal!("黑山"), EU),
    ("MF", literal!("法属圣马丁"), NA),
    ("MG", literal!("马达加斯加"), AF),
    ("MH", literal!("马绍尔群岛"), OC),
    ("MK", literal!("北马其顿"), EU),
    ("ML", literal!("马里"), AF),
    ("MM", literal!("缅甸"), AS),
    ("MN", literal!("蒙古"), AS),
    ("MO", literal!("澳门"), AS),
    ("MP", literal!("北马里亚纳群岛"), OC),
    ("MQ", literal!("马提尼克"), NA),
    ("MR", literal!("毛里塔尼亚"), AF),
    ("MS", literal!("蒙特塞拉特"), NA),
    ("MT", literal!("马耳他"), EU),
    ("MU", literal!("毛里求斯"), AF),
    ("MV", literal!("马尔代夫"), AS),
    ("MW", literal!("马拉维"), AF),
    ("MX", literal!("墨西哥"), NA),
    ("MY", literal!("马来西亚"), AS),
    ("MZ", literal!("莫桑比克"), AF),
    ("NA", literal!("纳米比亚"), AF),
    ("NC", literal!("新喀里多尼亚"), OC),
    ("NE", literal!("尼日尔"), AF),
    ("NF", literal!("诺福克岛"), OC),
    ("NG", literal!("尼日利亚"), AF),
    ("NI", literal!("尼加拉瓜"), NA),
    ("NL", literal!("荷兰"), EU),
    ("NO", literal!("挪威"), EU),
    ("NP", literal!("尼泊尔"), AS),
    ("NR", literal!("瑙鲁"), OC),
    ("NU", literal!("纽埃"), OC),
    ("NZ", literal!("新西兰"), OC),
    ("OM", literal!("阿曼"), AS),
    ("PA", literal!("巴拿马"), NA),
    ("PE", literal!("秘鲁"), SA),
    ("PF", literal!("法属波利尼西亚"), OC),
    ("PG", literal!("巴布亚新几内亚"), OC),
    ("PH", literal!("菲律宾"), AS),
    ("PK", literal!("巴基斯坦"), AS),
    ("PL", literal!("波兰"), EU),
    ("PM", literal!("圣皮埃尔和密克隆"), NA),
    ("PN", literal!("皮特凯恩群岛"), OC),
    ("PR", literal!("波多黎各"), NA),
    ("PS", literal!("巴勒斯坦"), AS),
    ("PT", literal!("葡萄牙"), EU),
    ("PW", literal!("帕劳"), OC),
    ("PY", literal!("巴拉圭"), SA),
    ("QA", literal!("卡塔尔"), AS),
    ("RE", literal!("留尼汪"), AF),
    ("RO", literal!("罗马尼亚"), EU),
    ("RS", literal!("塞尔维亚"), EU),
    ("RU", literal!("俄罗斯"), EU),
    ("RW", literal!("卢旺达"), AF),
    ("SA", literal!("沙特阿拉伯"), AS),
    ("SB", literal!("所罗门群岛"), OC),
    ("SC", literal!("塞舌尔"), AF),
    ("SD", literal!("苏丹"), AF),
    ("SE", literal!("瑞典"), EU),
    ("SG", literal!("新加坡"), AS),
    ("SH", literal!("圣赫勒拿"), AF),
    ("SI", literal!("斯洛文尼亚"), EU),
    ("SJ", literal!("斯瓦尔巴和扬马延"), EU),
    ("SK", literal!("斯洛伐克"), EU),
    ("SL", literal!("塞拉利昂"), AF),
    ("SM", literal!("圣马力诺"), EU),
    ("SN", literal!("塞内加尔"), AF),
    ("SO", literal!("索马里"), AF),
    ("SR", literal!("苏里南"), SA),
    ("SS", literal!("南苏丹"), AF),
    ("ST", literal!("圣多美和普林西比"), AF),
    ("SV", literal!("萨尔瓦多"), NA),
    ("SX", literal!("荷属圣马丁"), NA),
    ("SY", literal!("叙利亚"), AS),
    ("SZ", literal!("斯威士兰"), AF),
    ("TC", literal!("特克斯和凯科斯群岛"), NA),
    ("TD", literal!("乍得"), AF),
    ("TF", literal!("法属南部领地"), AN),
    ("TG", literal!("多哥"), AF),
    ("TH", literal!("泰国"), AS),
    ("TJ", literal!("塔吉克斯坦"), AS),
    ("TK", literal!("托克劳"), OC),
    ("TL", literal!("东帝汶"), OC),
    ("TM", literal!("土库曼斯坦"), AS),
    ("TN", literal!("突尼斯"), AF),
    ("TO", literal!("汤加"), OC),
    ("TR", literal!("土耳其"), AS),
    ("TT", literal!("特立尼达和多巴哥"), NA),
    ("TV", literal!("图瓦卢"), OC),
    ("TW", literal!("台湾"), AS),
    ("TZ", literal!("坦桑尼亚"), AF),
    ("UA", literal!("乌克兰"), EU),
    ("UG", literal!("乌干达"), AF),
    ("UM", literal!("美国本土外小岛屿"), OC),
    ("US", literal!("美国"), NA),
    ("UY", literal!("乌拉圭"), SA),
    ("UZ", literal!("乌兹别克斯坦"), AS),
    ("VA", literal!("梵蒂冈"), EU),
    ("VC", literal!("圣文森特和格林纳丁斯"), NA),
    ("VE", literal!("委内瑞拉"), SA),
    ("VG", literal!("英属维尔京群岛"), NA),
    ("VI", literal!("美属维尔京群岛"), NA),
    ("VN", literal!("越南"), AS),
    ("VU", literal!("瓦努阿图"), OC),
    ("WF", literal!("瓦利斯和富图纳"), OC),
    ("WS", literal!("萨摩亚"), OC),
    ("XK", literal!("科索沃"), EU),
    ("YE", literal!("也门"), AS),
    ("YT", literal!("马约特"), AF),
    ("ZA", literal!("南非"), AF),
    ("ZM", literal!("赞比亚"), AF),
    ("ZW", literal!("津巴布韦"), AF),
];

/// China's provinces, municipalities and autonomous regions by their English or pinyin names as
/// the flat databases spell them (after [`english_province_key`]), lowercase and sorted.
static CHINA_PROVINCES: &[(&str, ArcStr)] = &[
    ("anhui", literal!("安徽")),
    ("beijing", literal!("北京")),
    ("chongqing", literal!("重庆")),
    ("fujian", literal!("福建")),
    ("gansu", literal!("甘肃")),
    ("guangdong", literal!("广东")),
    ("guangxi", literal!("广西")),
    ("guizhou", literal!("贵州")),
    ("hainan", literal!("海南")),
    ("hebei", literal!("河北")),
    ("heilongjiang", literal!("黑龙江")),
    ("henan", literal!("河南")),
    ("hong kong", literal!("香港")),
    ("hubei", literal!("湖北")),
    ("hunan", literal!("湖南")),
    ("inner mongolia", literal!("内蒙古")),
    ("jiangsu", literal!("江苏")),
    ("jiangxi", literal!("江西")),
    ("jilin", literal!("吉林")),
    ("liaoning", literal!("辽宁")),
    ("macao", literal!("澳门")),
    ("macau", literal!("澳门")),
    ("nei mongol", literal!("内蒙古")),
    ("ningxia", literal!("宁夏")),
    ("qinghai", literal!("青海")),
    ("shaanxi", literal!("陕西")),
    ("shandong", literal!("山东")),
    ("shanghai", literal!("上海")),
    ("shanxi", literal!("山西")),
    ("sichuan", literal!("四川")),
    ("taiwan", literal!("台湾")),
    ("tianjin", literal!("天津")),
    ("tibet", literal!("西藏")),
    ("xinjiang", literal!("新疆")),
    ("xizang", literal!("西藏")),
    ("yunnan", literal!("云南")),
    ("zhejiang", literal!("浙江")),
];

/// English suffixes that carry no name ("Guangxi Zhuang Autonomous Region" → "guangxi"),
/// lowercase, longest first within each group so one pass strips them.
const ENGLISH_PROVINCE_SUFFIXES: &[&str] = &[
    " special administrative region",
    " autonomous region",
    " uyghur",
    " uygur",
    " zhuang",
    " hui",
    " province",
    " municipality",
    " sheng",
    " shi",
];

/// Chinese administrative suffixes the legacy platform dropped from province names, longest first.
const CHINESE_PROVINCE_SUFFIXES: &[&str] = &[
    "维吾尔自治区",
    "壮族自治区",
    "回族自治区",
    "特别行政区",
    "自治区",
    "省",
    "市",
];

/// Chinese name (static: free to clone) and continent of an ISO 3166-1 alpha-2 code
/// (case-insensitive), if known.
pub fn country(code: &str) -> Option<(&'static ArcStr, Continent)> {
    let &[a, b] = code.trim().as_bytes() else {
        return None;
    };
    // Uppercased on the stack: this runs once per lookup.
    let upper = [a.to_ascii_uppercase(), b.to_ascii_uppercase()];
    COUNTRIES
        .binary_search_by(|(c, _, _)| c.as_bytes().cmp(&upper[..]))
        .ok()
        .map(|i| (&COUNTRIES[i].1, COUNTRIES[i].2))
}

/// 中国, static.
pub fn china() -> ArcStr {
    literal!("中国")
}

/// The static name of one of China's provinces given in Chinese and already normalised (广东,
/// 内蒙古, 香港), so a [`super::Geo`] holds it without allocating.
pub fn china_province(name: &str) -> Option<&'static ArcStr> {
    CHINA_PROVINCES
        .iter()
        .map(|(_, n)| n)
        .find(|n| n.as_str() == name)
}

/// The Chinese continent name of a two-letter continent code (`AS`, `EU`, …; IPDB's `AP` is Asia).
pub fn continent_from_code(code: &str) -> Option<ArcStr> {
    let c = match code.trim().to_ascii_uppercase().as_str() {
        "AF" => AF,
        "AN" => AN,
        "AS" | "AP" => AS,
        "EU" => EU,
        "NA" => NA,
        "OC" => OC,
        "SA" => SA,
        _ => return None,
    };
    Some(c.chinese_name())
}

/// The Chinese name of one of China's provinces given in English ("Guangdong", "Inner Mongolia
/// Autonomous Region"), if it is one.
pub fn china_province_from_english(name: &str) -> Option<&'static ArcStr> {
    let key = english_province_key(name);
    CHINA_PROVINCES
        .binary_search_by(|(k, _)| (*k).cmp(key.as_str()))
        .ok()
        .map(|i| &CHINA_PROVINCES[i].1)
}

fn english_province_key(name: &str) -> String {
    let mut key = name.trim().to_ascii_lowercase();
    for suffix in ENGLISH_PROVINCE_SUFFIXES {
        if let Some(stripped) = key.strip_suffix(suffix) {
            key.truncate(stripped.len());
        }
    }
    key
}

/// The legacy normalisation of a Chinese province name: no trailing 省 or 市, autonomous regions
/// and special administrative regions shortened (广东省 → 广东, 内蒙古自治区 → 内蒙古,
/// 广西壮族自治区 → 广西). Names without such a suffix come back unchanged.
pub fn normalise_province(name: &str) -> &str {
    let name = name.trim();
    for suffix in CHINESE_PROVINCE_SUFFIXES {
        if let Some(stripped) = name.strip_suffix(suffix) {
            // Keep at least two characters: a bare suffix is not a name.
            if stripped.chars().count() >= 2 {
                return stripped;
            }
        }
    }
    name
}

/// The legacy normalisation of a Chinese city name: no trailing 市 (深圳市 → 深圳), unless that
/// would leave a single character.
pub fn normalise_city(name: &str) -> &str {
    let name = name.trim();
    match name.strip_suffix('市') {
        Some(stripped) if stripped.chars().count() >= 2 => stripped,
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn country_table_is_sorted_unique_and_complete() {
        assert!(COUNTRIES.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(COUNTRIES
            .iter()
            .all(|(c, n, _)| c.len() == 2 && !n.is_empty()));
        // ISO 3166-1 has 249 codes; DB-IP adds XK. The real dbip-city database uses exactly these.
        assert_eq!(COUNTRIES.len(), 250);
    }

    #[test]
    fn province_table_is_sorted_and_covers_every_province() {
        assert!(CHINA_PROVINCES.windows(2).all(|w| w[0].0 < w[1].0));
        let mut names: Vec<&str> = CHINA_PROVINCES.iter().map(|(_, n)| n.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        // 34 provincial-level divisions: 23 provinces (with Taiwan), 4 municipalities,
        // 5 autonomous regions, 2 special administrative regions.
        assert_eq!(names.len(), 34);
    }

    #[test]
    fn country_codes_map_to_chinese_names_and_continents() {
        let country = |code| country(code).map(|(n, c)| (n.as_str(), c));
        assert_eq!(country("CN"), Some(("中国", Continent::Asia)));
        assert_eq!(country("us"), Some(("美国", Continent::NorthAmerica)));
        assert_eq!(country("AU"), Some(("澳大利亚", Continent::Oceania)));
        assert_eq!(country("GB"), Some(("英国", Continent::Europe)));
        assert_eq!(country("BR"), Some(("巴西", Continent::SouthAmerica)));
        assert_eq!(country("HK"), Some(("香港", Continent::Asia)));
        assert_eq!(country("ZZ"), None);
        assert_eq!(country(""), None);
        assert_eq!(country("CHN"), None);
        assert_eq!(Continent::Asia.chinese_name(), "亚洲");
    }

    #[test]
    fn english_province_names_map_to_chinese() {
        for (en, zh) in [
            ("Guangdong", "广东"),
            ("Beijing", "北京"),
            ("Inner Mongolia", "内蒙古"),
            ("Inner Mongolia Autonomous Region", "内蒙古"),
            ("Guangxi Zhuang Autonomous Region", "广西"),
            ("Ningxia Hui Autonomous Region", "宁夏"),
            ("Xinjiang Uyghur Autonomous Region", "新疆"),
            ("Tibet", "西藏"),
            ("Xizang", "西藏"),
            ("Shaanxi", "陕西"),
            ("Shanxi", "山西"),
            ("Sichuan Province", "四川"),
            ("Shanghai Municipality", "上海"),
            ("Hong Kong Special Administrative Region", "香港"),
            (" zhejiang ", "浙江"),
        ] {
            assert_eq!(
                china_province_from_english(en).map(ArcStr::as_str),
                Some(zh),
                "{en}"
            );
        }
        assert_eq!(china_province_from_english("California"), None);
        assert_eq!(china_province_from_english(""), None);
    }

    #[test]
    fn chinese_province_names_are_normalised_like_the_legacy_platform() {
        for (raw, want) in [
            ("广东省", "广东"),
            ("北京市", "北京"),
            ("上海市", "上海"),
            ("内蒙古自治区", "内蒙古"),
            ("广西壮族自治区", "广西"),
            ("西藏自治区", "西藏"),
            ("宁夏回族自治区", "宁夏"),
            ("新疆维吾尔自治区", "新疆"),
            ("香港特别行政区", "香港"),
            ("澳门特别行政区", "澳门"),
            ("台湾省", "台湾"),
            ("广东", "广东"),
            ("内蒙古", "内蒙古"),
            ("California", "California"),
            ("省", "省"),
        ] {
            assert_eq!(normalise_province(raw), want, "{raw}");
        }
    }

    #[test]
    fn chinese_city_names_drop_a_trailing_shi() {
        assert_eq!(normalise_city("深圳市"), "深圳");
        assert_eq!(normalise_city("呼和浩特市"), "呼和浩特");
        assert_eq!(normalise_city("深圳"), "深圳");
        assert_eq!(normalise_city("沙市"), "沙市");
        assert_eq!(normalise_city("Guangzhou"), "Guangzhou");
    }
}
