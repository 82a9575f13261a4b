"""People for generated accounts: names as they are written, and the ASCII email people get for them.

Real PagerDuty accounts are not "First Last" in ASCII. They mix scripts (王伟, Дмитрий Иванов,
محمد علي, 김민준), accents (José Núñez, Zoë Ørsted, Çağla Şahin), family-name-first orders,
one-word names, hyphens and apostrophes, bots and integrations, and a shared company email domain
with a few others (contractors, acquisitions). List endpoints sort by name, so names that do not
start with an ASCII letter all land past the 10,000th position; that is what makes large accounts
hard to page, and why the generator has them.

Each locale lists (written, romanised) pairs; the romanised form only builds the email. Everything
is drawn from the caller's `random.Random`, so a seed gives the same people every time.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# (written, romanised) pairs. Family-first locales write "family given" (with or without a space).
LOCALES: dict[str, dict] = {
    "en": {
        "weight": 26,
        "given": [
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
            "Chris",
            "Karen",
            "Daniel",
            "Nancy",
            "Matthew",
            "Lisa",
            "Anthony",
            "Betty",
            "Mark",
            "Sandra",
            "Andrew",
            "Ashley",
            "Joshua",
            "Kimberly",
            "Kevin",
            "Emily",
            "Brian",
            "Donna",
            "George",
            "Michelle",
            "Tim",
            "Carol",
            "Ryan",
            "Amanda",
            "Jacob",
            "Melissa",
            "Gary",
            "Deborah",
            "Eric",
            "Stephanie",
            "Jonathan",
            "Rebecca",
            "Sean",
            "Siobhan",
            "Liam",
            "Aoife",
            "Jean-Luc",
            "Mary-Kate",
            "Zach",
            "Quinn",
            "Yvonne",
            "Xavier",
        ],
        "family": [
            "Smith",
            "Johnson",
            "Williams",
            "Brown",
            "Jones",
            "Miller",
            "Davis",
            "Wilson",
            "Anderson",
            "Taylor",
            "Thomas",
            "Moore",
            "Jackson",
            "Martin",
            "Lee",
            "Thompson",
            "White",
            "Harris",
            "Clark",
            "Lewis",
            "Robinson",
            "Walker",
            "Young",
            "Allen",
            "King",
            "Wright",
            "Scott",
            "Hill",
            "Green",
            "Adams",
            "Baker",
            "Nelson",
            "Carter",
            "Mitchell",
            "Roberts",
            "Turner",
            "Phillips",
            "Campbell",
            "Parker",
            "Evans",
            "O'Brien",
            "O'Connor",
            "McDonald",
            "MacLeod",
            "Smith-Jones",
            "Fitzgerald",
            "Yates",
            "Zimmerman",
        ],
    },
    "es": {
        "weight": 8,
        "given": [
            ("José", "jose"),
            ("María", "maria"),
            ("Jesús", "jesus"),
            ("Lucía", "lucia"),
            ("Sofía", "sofia"),
            ("Martín", "martin"),
            ("Andrés", "andres"),
            ("Inés", "ines"),
            ("Raúl", "raul"),
            ("Álvaro", "alvaro"),
            ("Ángela", "angela"),
            ("Óscar", "oscar"),
            ("Iñigo", "inigo"),
            ("Carmen", "carmen"),
            ("Diego", "diego"),
            ("Valentina", "valentina"),
            ("Mateo", "mateo"),
            ("Camila", "camila"),
            ("Héctor", "hector"),
            ("Élodie", "elodie"),
        ],
        "family": [
            ("García", "garcia"),
            ("Martínez", "martinez"),
            ("López", "lopez"),
            ("Sánchez", "sanchez"),
            ("Pérez", "perez"),
            ("Gómez", "gomez"),
            ("Fernández", "fernandez"),
            ("Núñez", "nunez"),
            ("Peña", "pena"),
            ("Ibáñez", "ibanez"),
            ("Muñoz", "munoz"),
            ("Álvarez", "alvarez"),
            ("Ortiz", "ortiz"),
            ("Rodríguez", "rodriguez"),
            ("de la Cruz", "delacruz"),
            ("Vázquez", "vazquez"),
        ],
        "two_family": 0.5,
    },
    "pt": {
        "weight": 5,
        "given": [
            ("João", "joao"),
            ("Conceição", "conceicao"),
            ("Antônio", "antonio"),
            ("Luís", "luis"),
            ("Thaís", "thais"),
            ("Gonçalo", "goncalo"),
            ("Beatriz", "beatriz"),
            ("Vitória", "vitoria"),
        ],
        "family": [
            ("Gonçalves", "goncalves"),
            ("Simões", "simoes"),
            ("Magalhães", "magalhaes"),
            ("Araújo", "araujo"),
            ("Conceição", "conceicao"),
            ("Silva", "silva"),
            ("Brandão", "brandao"),
            ("Assunção", "assuncao"),
        ],
    },
    "fr": {
        "weight": 5,
        "given": [
            ("François", "francois"),
            ("Hélène", "helene"),
            ("Zoë", "zoe"),
            ("Éric", "eric"),
            ("Anaïs", "anais"),
            ("Jérôme", "jerome"),
            ("Gaëlle", "gaelle"),
            ("Noël", "noel"),
            ("Cécile", "cecile"),
            ("Loïc", "loic"),
        ],
        "family": [
            ("Lefèvre", "lefevre"),
            ("Dubois", "dubois"),
            ("Château", "chateau"),
            ("Mercier", "mercier"),
            ("Lemaître", "lemaitre"),
            ("Bélanger", "belanger"),
            ("Garçon", "garcon"),
            ("d'Arcy", "darcy"),
        ],
    },
    "de": {
        "weight": 5,
        "given": [
            ("Jürgen", "juergen"),
            ("Jörg", "joerg"),
            ("Björn", "bjoern"),
            ("Käthe", "kaethe"),
            ("Uwe", "uwe"),
            ("Sören", "soeren"),
            ("Ute", "ute"),
            ("Özlem", "oezlem"),
            ("Günther", "guenther"),
            ("Anke", "anke"),
        ],
        "family": [
            ("Müller", "mueller"),
            ("Schröder", "schroeder"),
            ("Groß", "gross"),
            ("Weiß", "weiss"),
            ("Köhler", "koehler"),
            ("Bäcker", "baecker"),
            ("Schäfer", "schaefer"),
            ("Fuchs", "fuchs"),
        ],
    },
    "nordic": {
        "weight": 3,
        "given": [
            ("Øystein", "oystein"),
            ("Åsa", "asa"),
            ("Bjørn", "bjorn"),
            ("Ægir", "aegir"),
            ("Sigrún", "sigrun"),
            ("Þórunn", "thorunn"),
            ("Jón", "jon"),
            ("Ása", "asa"),
            ("Ólafur", "olafur"),
            ("Ingrid", "ingrid"),
        ],
        "family": [
            ("Ørsted", "orsted"),
            ("Sørensen", "sorensen"),
            ("Ågren", "agren"),
            ("Løvland", "lovland"),
            ("Guðmundsdóttir", "gudmundsdottir"),
            ("Þórsson", "thorsson"),
            ("Åberg", "aberg"),
            ("Nyström", "nystrom"),
        ],
    },
    "pl_cz": {
        "weight": 4,
        "given": [
            ("Łukasz", "lukasz"),
            ("Małgorzata", "malgorzata"),
            ("Paweł", "pawel"),
            ("Zdeněk", "zdenek"),
            ("Jiří", "jiri"),
            ("Šárka", "sarka"),
            ("Żaneta", "zaneta"),
            ("Grzegorz", "grzegorz"),
        ],
        "family": [
            ("Wojciechowski", "wojciechowski"),
            ("Dvořák", "dvorak"),
            ("Łęcki", "lecki"),
            ("Ślusarczyk", "slusarczyk"),
            ("Nováková", "novakova"),
            ("Żółkiewski", "zolkiewski"),
            ("Černý", "cerny"),
            ("Kowalczyk", "kowalczyk"),
        ],
    },
    "tr": {
        "weight": 3,
        "given": [
            ("Çağla", "cagla"),
            ("Özgür", "ozgur"),
            ("Şebnem", "sebnem"),
            ("İbrahim", "ibrahim"),
            ("Gülşen", "gulsen"),
            ("Ömer", "omer"),
            ("Ümit", "umit"),
            ("Barış", "baris"),
        ],
        "family": [
            ("Şahin", "sahin"),
            ("Yıldız", "yildiz"),
            ("Öztürk", "ozturk"),
            ("Çelik", "celik"),
            ("Doğan", "dogan"),
            ("Güneş", "gunes"),
            ("Aydın", "aydin"),
            ("Kılıç", "kilic"),
        ],
    },
    "vi": {
        "weight": 3,
        "family_first": True,
        "given": [
            ("Văn An", "an"),
            ("Thị Hương", "huong"),
            ("Minh Đức", "duc"),
            ("Thu Trang", "trang"),
            ("Quốc Bảo", "bao"),
        ],
        "family": [("Nguyễn", "nguyen"), ("Trần", "tran"), ("Lê", "le"), ("Phạm", "pham"), ("Đặng", "dang")],
    },
    "zh": {
        "weight": 7,
        "family_first": True,
        "no_space": True,
        "given": [
            ("伟", "wei"),
            ("芳", "fang"),
            ("娜", "na"),
            ("敏", "min"),
            ("静", "jing"),
            ("磊", "lei"),
            ("洋", "yang"),
            ("艳", "yan"),
            ("勇", "yong"),
            ("军", "jun"),
            ("杰", "jie"),
            ("娟", "juan"),
            ("涛", "tao"),
            ("明", "ming"),
            ("超", "chao"),
            ("秀英", "xiuying"),
            ("志强", "zhiqiang"),
            ("建华", "jianhua"),
        ],
        "family": [
            ("王", "wang"),
            ("李", "li"),
            ("张", "zhang"),
            ("刘", "liu"),
            ("陈", "chen"),
            ("杨", "yang"),
            ("黄", "huang"),
            ("赵", "zhao"),
            ("吴", "wu"),
            ("周", "zhou"),
            ("徐", "xu"),
            ("孙", "sun"),
        ],
        # Many colleagues write their name in Latin letters in the directory.
        "romanised_name": 0.35,
    },
    "ja": {
        "weight": 4,
        "family_first": True,
        "given": [
            ("花子", "hanako"),
            ("太郎", "taro"),
            ("陽菜", "hina"),
            ("蓮", "ren"),
            ("結衣", "yui"),
            ("翔太", "shota"),
            ("さくら", "sakura"),
            ("健", "ken"),
        ],
        "family": [
            ("佐藤", "sato"),
            ("鈴木", "suzuki"),
            ("高橋", "takahashi"),
            ("田中", "tanaka"),
            ("伊藤", "ito"),
            ("渡辺", "watanabe"),
            ("山本", "yamamoto"),
            ("中村", "nakamura"),
        ],
        "romanised_name": 0.3,
    },
    "ko": {
        "weight": 3,
        "family_first": True,
        "no_space": True,
        "given": [("민준", "minjun"), ("서연", "seoyeon"), ("지훈", "jihoon"), ("하은", "haeun"), ("도윤", "doyun")],
        "family": [("김", "kim"), ("이", "lee"), ("박", "park"), ("최", "choi"), ("정", "jung")],
    },
    "ru_uk": {
        "weight": 5,
        "given": [
            ("Дмитрий", "dmitry"),
            ("Анна", "anna"),
            ("Сергей", "sergey"),
            ("Ольга", "olga"),
            ("Алексей", "alexey"),
            ("Наталья", "natalya"),
            ("Олена", "olena"),
            ("Тарас", "taras"),
            ("Юлия", "yulia"),
            ("Євген", "yevhen"),
        ],
        "family": [
            ("Иванов", "ivanov"),
            ("Смирнова", "smirnova"),
            ("Кузнецов", "kuznetsov"),
            ("Попова", "popova"),
            ("Коваленко", "kovalenko"),
            ("Шевченко", "shevchenko"),
            ("Бондаренко", "bondarenko"),
            ("Соколов", "sokolov"),
        ],
        "romanised_name": 0.3,
    },
    "el": {
        "weight": 2,
        "given": [("Νίκος", "nikos"), ("Ελένη", "eleni"), ("Γιώργος", "giorgos"), ("Μαρία", "maria")],
        "family": [("Παπαδόπουλος", "papadopoulos"), ("Οικονόμου", "oikonomou"), ("Γεωργίου", "georgiou")],
    },
    "ar": {
        "weight": 4,
        "given": [("محمد", "mohammed"), ("فاطمة", "fatima"), ("أحمد", "ahmed"), ("مريم", "maryam"), ("علي", "ali")],
        "family": [("علي", "ali"), ("حسن", "hassan"), ("الخطيب", "alkhatib"), ("منصور", "mansour"), ("حداد", "haddad")],
        "romanised_name": 0.4,
    },
    "he": {
        "weight": 2,
        "given": [("נועה", "noa"), ("יוסף", "yosef"), ("תמר", "tamar"), ("איתי", "itai")],
        "family": [("כהן", "cohen"), ("לוי", "levi"), ("מזרחי", "mizrahi"), ("פרץ", "peretz")],
        "romanised_name": 0.4,
    },
    "hi": {
        "weight": 6,
        "given": [
            ("अर्जुन", "arjun"),
            ("प्रिया", "priya"),
            ("राहुल", "rahul"),
            ("अनन्या", "ananya"),
            ("विक्रम", "vikram"),
            ("दीपिका", "deepika"),
        ],
        "family": [("शर्मा", "sharma"), ("वर्मा", "verma"), ("पटेल", "patel"), ("गुप्ता", "gupta"), ("सिंह", "singh")],
        # Most Indian colleagues use the Latin spelling at work.
        "romanised_name": 0.7,
    },
    "th": {
        "weight": 1,
        "given": [("สมชาย", "somchai"), ("สุดา", "suda"), ("ประยุทธ", "prayut")],
        "family": [("ใจดี", "jaidee"), ("ศรีสุข", "srisuk"), ("วงศ์ใหญ่", "wongyai")],
    },
    # One-word names: Indonesian and Javanese mononyms, and people who only give one.
    "mono": {
        "weight": 2,
        "mononym": True,
        "given": [
            ("Sukarno", "sukarno"),
            ("Budi", "budi"),
            ("Wiranto", "wiranto"),
            ("Ayu", "ayu"),
            ("Suharti", "suharti"),
            ("Teller", "teller"),
            ("Madonna", "madonna"),
            ("Ío", "io"),
            ("Ōta", "ota"),
            ("Zé", "ze"),
            ("Sutrisno", "sutrisno"),
            ("Megawati", "megawati"),
            ("Bambang", "bambang"),
            ("Ratna", "ratna"),
            ("Joko", "joko"),
            ("Slamet", "slamet"),
            ("Björk", "bjork"),
            ("Pelé", "pele"),
            ("Cher", "cher"),
            ("Oyunbileg", "oyunbileg"),
        ],
        "family": [],
    },
}

BOTS = [
    ("Deploy Bot", "deploy-bot"),
    ("Datadog Integration", "datadog"),
    ("[bot] terraform", "svc-terraform"),
    ("jenkins", "jenkins"),
    ("ci-runner", "ci.runner"),
    ("Grafana Alerts", "grafana"),
    ("ServiceNow Sync", "servicenow"),
    ("zz-monitoring", "zz-monitoring"),
    ("Ops Automation", "ops-automation"),
    ("Backup Verifier", "backup.verifier"),
]

# Most people share the company domain; contractors and acquisitions do not.
DOMAINS = (("example.com", 86), ("contractors.example.net", 7), ("acme-emea.example.org", 5), ("example.co.uk", 2))


@dataclass(frozen=True)
class Person:
    name: str
    email_local: str
    domain: str
    is_bot: bool = False


def _pair(value) -> tuple[str, str]:
    if isinstance(value, tuple):
        return value
    roman = value.lower().replace("'", "").replace(" ", "").replace("-", "")
    return value, roman


def _weighted(rng: random.Random, table) -> object:
    values, weights = zip(*table, strict=True)
    return rng.choices(values, weights=weights)[0]


_LOCALE_TABLE = tuple((key, spec["weight"]) for key, spec in LOCALES.items())
_BOT_SHARE = 0.01


def person(rng: random.Random) -> Person:
    """One generated person (or, about 1 in 100, a bot or integration user)."""
    domain = _weighted(rng, DOMAINS)
    if rng.random() < _BOT_SHARE:
        name, local = rng.choice(BOTS)
        # Integrations are often set up per region or environment: same bot name, another mailbox.
        suffix = rng.choice(("", "", "-eu", "-us", "-staging", "+pd"))
        return Person(name=name, email_local=local + suffix, domain="example.com", is_bot=True)
    spec = LOCALES[_weighted(rng, _LOCALE_TABLE)]
    given, given_roman = _pair(rng.choice(spec["given"]))
    if spec.get("mononym"):
        return Person(name=given, email_local=given_roman, domain=domain)
    family, family_roman = _pair(rng.choice(spec["family"]))
    if spec.get("two_family") and rng.random() < spec["two_family"]:
        second, second_roman = _pair(rng.choice(spec["family"]))
        if second != family:
            family, family_roman = f"{family} {second}", f"{family_roman}{second_roman}"
    family_roman = family_roman.replace(" ", "").replace("'", "")
    if spec.get("romanised_name") and rng.random() < spec["romanised_name"]:
        name = f"{given_roman.capitalize()} {family_roman.capitalize()}"
    elif spec.get("family_first"):
        name = f"{family}{'' if spec.get('no_space') else ' '}{given}"
    else:
        name = f"{given} {family}"
    style = rng.random()
    if style < 0.6:
        local = f"{given_roman}.{family_roman}"
    elif style < 0.75:
        local = f"{given_roman[0]}{family_roman}"
    elif style < 0.85:
        local = f"{given_roman}_{family_roman}"
    elif style < 0.95:
        local = f"{family_roman}.{given_roman}"
    else:
        local = f"{given_roman}{family_roman[0]}"
    return Person(name=name, email_local=local, domain=domain)
