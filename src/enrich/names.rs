//! Place names as the platform stores them: Chinese country and continent names for ISO country
//! codes, Chinese names for China's provinces given in English, and the legacy normalisation of
//! Chinese province and city names (`shared/spec/platform-schema.md`).
//!
//! The tables are small, static and sorted, so a lookup is a binary search with no allocation.
//! Country names are the short forms in everyday Simplified Chinese use (韩国, not 大韩民国),
//! the same forms the GeoIP2 `zh-CN` names use today; continents follow MaxMind's assignment so
//! that a flat database and a GeoIP2 database give the same continent for a country. Hong Kong,
//! Macao and Taiwan keep their own codes here, as in every supported database: their country is
//! 香港 / 澳门 / 台湾 and `is_china` stays false for them.

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
    /// The Simplified Chinese name, as GeoIP2's `zh-CN` names spell it.
    pub fn chinese_name(self) -> &'static str {
        match self {
            Self::Africa => "非洲",
            Self::Antarctica => "南极洲",
            Self::Asia => "亚洲",
            Self::Europe => "欧洲",
            Self::NorthAmerica => "北美洲",
            Self::Oceania => "大洋洲",
            Self::SouthAmerica => "南美洲",
        }
    }
}

use Continent::{
    Africa as AF, Antarctica as AN, Asia as AS, Europe as EU, NorthAmerica as NA, Oceania as OC,
    SouthAmerica as SA,
};

/// ISO 3166-1 alpha-2 code (plus `XK`, Kosovo, which DB-IP uses), Chinese name, continent.
/// Sorted by code; a unit test keeps it sorted and unique.
const COUNTRIES: &[(&str, &str, Continent)] = &[
    ("AD", "安道尔", EU),
    ("AE", "阿联酋", AS),
    ("AF", "阿富汗", AS),
    ("AG", "安提瓜和巴布达", NA),
    ("AI", "安圭拉", NA),
    ("AL", "阿尔巴尼亚", EU),
    ("AM", "亚美尼亚", AS),
    ("AO", "安哥拉", AF),
    ("AQ", "南极洲", AN),
    ("AR", "阿根廷", SA),
    ("AS", "美属萨摩亚", OC),
    ("AT", "奥地利", EU),
    ("AU", "澳大利亚", OC),
    ("AW", "阿鲁巴", NA),
    ("AX", "奥兰群岛", EU),
    ("AZ", "阿塞拜疆", AS),
    ("BA", "波黑", EU),
    ("BB", "巴巴多斯", NA),
    ("BD", "孟加拉国", AS),
    ("BE", "比利时", EU),
    ("BF", "布基纳法索", AF),
    ("BG", "保加利亚", EU),
    ("BH", "巴林", AS),
    ("BI", "布隆迪", AF),
    ("BJ", "贝宁", AF),
    ("BL", "圣巴泰勒米", NA),
    ("BM", "百慕大", NA),
    ("BN", "文莱", AS),
    ("BO", "玻利维亚", SA),
    ("BQ", "荷兰加勒比区", NA),
    ("BR", "巴西", SA),
    ("BS", "巴哈马", NA),
    ("BT", "不丹", AS),
    ("BV", "布韦岛", AN),
    ("BW", "博茨瓦纳", AF),
    ("BY", "白俄罗斯", EU),
    ("BZ", "伯利兹", NA),
    ("CA", "加拿大", NA),
    ("CC", "科科斯（基林）群岛", AS),
    ("CD", "刚果（金）", AF),
    ("CF", "中非", AF),
    ("CG", "刚果（布）", AF),
    ("CH", "瑞士", EU),
    ("CI", "科特迪瓦", AF),
    ("CK", "库克群岛", OC),
    ("CL", "智利", SA),
    ("CM", "喀麦隆", AF),
    ("CN", "中国", AS),
    ("CO", "哥伦比亚", SA),
    ("CR", "哥斯达黎加", NA),
    ("CU", "古巴", NA),
    ("CV", "佛得角", AF),
    ("CW", "库拉索", NA),
    ("CX", "圣诞岛", OC),
    ("CY", "塞浦路斯", EU),
    ("CZ", "捷克", EU),
    ("DE", "德国", EU),
    ("DJ", "吉布提", AF),
    ("DK", "丹麦", EU),
    ("DM", "多米尼克", NA),
    ("DO", "多米尼加", NA),
    ("DZ", "阿尔及利亚", AF),
    ("EC", "厄瓜多尔", SA),
    ("EE", "爱沙尼亚", EU),
    ("EG", "埃及", AF),
    ("EH", "西撒哈拉", AF),
    ("ER", "厄立特里亚", AF),
    ("ES", "西班牙", EU),
    ("ET", "埃塞俄比亚", AF),
    ("FI", "芬兰", EU),
    ("FJ", "斐济", OC),
    ("FK", "福克兰群岛", SA),
    ("FM", "密克罗尼西亚联邦", OC),
    ("FO", "法罗群岛", EU),
    ("FR", "法国", EU),
    ("GA", "加蓬", AF),
    ("GB", "英国", EU),
    ("GD", "格林纳达", NA),
    ("GE", "格鲁吉亚", AS),
    ("GF", "法属圭亚那", SA),
    ("GG", "根西岛", EU),
    ("GH", "加纳", AF),
    ("GI", "直布罗陀", EU),
    ("GL", "格陵兰", NA),
    ("GM", "冈比亚", AF),
    ("GN", "几内亚", AF),
    ("GP", "瓜德罗普", NA),
    ("GQ", "赤道几内亚", AF),
    ("GR", "希腊", EU),
    ("GS", "南乔治亚和南桑威奇群岛", AN),
    ("GT", "危地马拉", NA),
    ("GU", "关岛", OC),
    ("GW", "几内亚比绍", AF),
    ("GY", "圭亚那", SA),
    ("HK", "香港", AS),
    ("HM", "赫德岛和麦克唐纳群岛", AN),
    ("HN", "洪都拉斯", NA),
    ("HR", "克罗地亚", EU),
    ("HT", "海地", NA),
    ("HU", "匈牙利", EU),
    ("ID", "印度尼西亚", AS),
    ("IE", "爱尔兰", EU),
    ("IL", "以色列", AS),
    ("IM", "马恩岛", EU),
    ("IN", "印度", AS),
    ("IO", "英属印度洋领地", AS),
    ("IQ", "伊拉克", AS),
    ("IR", "伊朗", AS),
    ("IS", "冰岛", EU),
    ("IT", "意大利", EU),
    ("JE", "泽西岛", EU),
    ("JM", "牙买加", NA),
    ("JO", "约旦", AS),
    ("JP", "日本", AS),
    ("KE", "肯尼亚", AF),
    ("KG", "吉尔吉斯斯坦", AS),
    ("KH", "柬埔寨", AS),
    ("KI", "基里巴斯", OC),
    ("KM", "科摩罗", AF),
    ("KN", "圣基茨和尼维斯", NA),
    ("KP", "朝鲜", AS),
    ("KR", "韩国", AS),
    ("KW", "科威特", AS),
    ("KY", "开曼群岛", NA),
    ("KZ", "哈萨克斯坦", AS),
    ("LA", "老挝", AS),
    ("LB", "黎巴嫩", AS),
    ("LC", "圣卢西亚", NA),
    ("LI", "列支敦士登", EU),
    ("LK", "斯里兰卡", AS),
    ("LR", "利比里亚", AF),
    ("LS", "莱索托", AF),
    ("LT", "立陶宛", EU),
    ("LU", "卢森堡", EU),
    ("LV", "拉脱维亚", EU),
    ("LY", "利比亚", AF),
    ("MA", "摩洛哥", AF),
    ("MC", "摩纳哥", EU),
    ("MD", "摩尔多瓦", EU),
    ("ME", "黑山", EU),
    ("MF", "法属圣马丁", NA),
    ("MG", "马达加斯加", AF),
    ("MH", "马绍尔群岛", OC),
    ("MK", "北马其顿", EU),
    ("ML", "马里", AF),
    ("MM", "缅甸", AS),
    ("MN", "蒙古", AS),
    ("MO", "澳门", AS),
    ("MP", "北马里亚纳群岛", OC),
    ("MQ", "马提尼克", NA),
    ("MR", "毛里塔尼亚", AF),
    ("MS", "蒙特塞拉特", NA),
    ("MT", "马耳他", EU),
    ("MU", "毛里求斯", AF),
    ("MV", "马尔代夫", AS),
    ("MW", "马拉维", AF),
    ("MX", "墨西哥", NA),
    ("MY", "马来西亚", AS),
    ("MZ", "莫桑比克", AF),
    ("NA", "纳米比亚", AF),
    ("NC", "新喀里多尼亚", OC),
    ("NE", "尼日尔", AF),
    ("NF", "诺福克岛", OC),
    ("NG", "尼日利亚", AF),
    ("NI", "尼加拉瓜", NA),
    ("NL", "荷兰", EU),
    ("NO", "挪威", EU),
    ("NP", "尼泊尔", AS),
    ("NR", "瑙鲁", OC),
    ("NU", "纽埃", OC),
    ("NZ", "新西兰", OC),
    ("OM", "阿曼", AS),
    ("PA", "巴拿马", NA),
    ("PE", "秘鲁", SA),
    ("PF", "法属波利尼西亚", OC),
    ("PG", "巴布亚新几内亚", OC),
    ("PH", "菲律宾", AS),
    ("PK", "巴基斯坦", AS),
    ("PL", "波兰", EU),
    ("PM", "圣皮埃尔和密克隆", NA),
    ("PN", "皮特凯恩群岛", OC),
    ("PR", "波多黎各", NA),
    ("PS", "巴勒斯坦", AS),
    ("PT", "葡萄牙", EU),
    ("PW", "帕劳", OC),
    ("PY", "巴拉圭", SA),
    ("QA", "卡塔尔", AS),
    ("RE", "留尼汪", AF),
    ("RO", "罗马尼亚", EU),
    ("RS", "塞尔维亚", EU),
    ("RU", "俄罗斯", EU),
    ("RW", "卢旺达", AF),
    ("SA", "沙特阿拉伯", AS),
    ("SB", "所罗门群岛", OC),
    ("SC", "塞舌尔", AF),
    ("SD", "苏丹", AF),
    ("SE", "瑞典", EU),
    ("SG", "新加坡", AS),
    ("SH", "圣赫勒拿", AF),
    ("SI", "斯洛文尼亚", EU),
    ("SJ", "斯瓦尔巴和扬马延", EU),
    ("SK", "斯洛伐克", EU),
    ("SL", "塞拉利昂", AF),
    ("SM", "圣马力诺", EU),
    ("SN", "塞内加尔", AF),
    ("SO", "索马里", AF),
    ("SR", "苏里南", SA),
    ("SS", "南苏丹", AF),
    ("ST", "圣多美和普林西比", AF),
    ("SV", "萨尔瓦多", NA),
    ("SX", "荷属圣马丁", NA),
    ("SY", "叙利亚", AS),
    ("SZ", "斯威士兰", AF),
    ("TC", "特克斯和凯科斯群岛", NA),
    ("TD", "乍得", AF),
    ("TF", "法属南部领地", AN),
    ("TG", "多哥", AF),
    ("TH", "泰国", AS),
    ("TJ", "塔吉克斯坦", AS),
    ("TK", "托克劳", OC),
    ("TL", "东帝汶", OC),
    ("TM", "土库曼斯坦", AS),
    ("TN", "突尼斯", AF),
    ("TO", "汤加", OC),
    ("TR", "土耳其", AS),
    ("TT", "特立尼达和多巴哥", NA),
    ("TV", "图瓦卢", OC),
    ("TW", "台湾", AS),
    ("TZ", "坦桑尼亚", AF),
    ("UA", "乌克兰", EU),
    ("UG", "乌干达", AF),
    ("UM", "美国本土外小岛屿", OC),
    ("US", "美国", NA),
    ("UY", "乌拉圭", SA),
    ("UZ", "乌兹别克斯坦", AS),
    ("VA", "梵蒂冈", EU),
    ("VC", "圣文森特和格林纳丁斯", NA),
    ("VE", "委内瑞拉", SA),
    ("VG", "英属维尔京群岛", NA),
    ("VI", "美属维尔京群岛", NA),
    ("VN", "越南", AS),
    ("VU", "瓦努阿图", OC),
    ("WF", "瓦利斯和富图纳", OC),
    ("WS", "萨摩亚", OC),
    ("XK", "科索沃", EU),
    ("YE", "也门", AS),
    ("YT", "马约特", AF),
    ("ZA", "南非", AF),
    ("ZM", "赞比亚", AF),
    ("ZW", "津巴布韦", AF),
];

/// China's provinces, municipalities and autonomous regions by their English or pinyin names as
/// the flat databases spell them (after [`english_province_key`]), lowercase and sorted.
const CHINA_PROVINCES: &[(&str, &str)] = &[
    ("anhui", "安徽"),
    ("beijing", "北京"),
    ("chongqing", "重庆"),
    ("fujian", "福建"),
    ("gansu", "甘肃"),
    ("guangdong", "广东"),
    ("guangxi", "广西"),
    ("guizhou", "贵州"),
    ("hainan", "海南"),
    ("hebei", "河北"),
    ("heilongjiang", "黑龙江"),
    ("henan", "河南"),
    ("hong kong", "香港"),
    ("hubei", "湖北"),
    ("hunan", "湖南"),
    ("inner mongolia", "内蒙古"),
    ("jiangsu", "江苏"),
    ("jiangxi", "江西"),
    ("jilin", "吉林"),
    ("liaoning", "辽宁"),
    ("macao", "澳门"),
    ("macau", "澳门"),
    ("nei mongol", "内蒙古"),
    ("ningxia", "宁夏"),
    ("qinghai", "青海"),
    ("shaanxi", "陕西"),
    ("shandong", "山东"),
    ("shanghai", "上海"),
    ("shanxi", "山西"),
    ("sichuan", "四川"),
    ("taiwan", "台湾"),
    ("tianjin", "天津"),
    ("tibet", "西藏"),
    ("xinjiang", "新疆"),
    ("xizang", "西藏"),
    ("yunnan", "云南"),
    ("zhejiang", "浙江"),
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

/// Chinese name and continent of an ISO 3166-1 alpha-2 code (case-insensitive), if known.
pub fn country(code: &str) -> Option<(&'static str, Continent)> {
    let code = code.trim();
    if code.len() != 2 {
        return None;
    }
    let upper = code.to_ascii_uppercase();
    COUNTRIES
        .binary_search_by(|(c, _, _)| (*c).cmp(upper.as_str()))
        .ok()
        .map(|i| (COUNTRIES[i].1, COUNTRIES[i].2))
}

/// The Chinese name of one of China's provinces given in English ("Guangdong", "Inner Mongolia
/// Autonomous Region"), if it is one.
pub fn china_province_from_english(name: &str) -> Option<&'static str> {
    let key = english_province_key(name);
    CHINA_PROVINCES
        .binary_search_by(|(k, _)| (*k).cmp(key.as_str()))
        .ok()
        .map(|i| CHINA_PROVINCES[i].1)
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
        let mut names: Vec<&str> = CHINA_PROVINCES.iter().map(|(_, n)| *n).collect();
        names.sort_unstable();
        names.dedup();
        // 34 provincial-level divisions: 23 provinces (with Taiwan), 4 municipalities,
        // 5 autonomous regions, 2 special administrative regions.
        assert_eq!(names.len(), 34);
    }

    #[test]
    fn country_codes_map_to_chinese_names_and_continents() {
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
            assert_eq!(china_province_from_english(en), Some(zh), "{en}");
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
