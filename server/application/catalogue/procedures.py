"""The national catalogue: every procedure of the seed's §2(3) (アクションプログラム, 平成28年12月).

(ア) 児童手当, (イ) 保育, (ウ) ひとり親支援, (エ) 母子保健: each 電子申請 item is a Procedure with its
start month; each お知らせ item is a Notice attached to the procedure it follows up. Three procedures
carry their real forms: 児童手当 認定請求, 保育 支給認定申請, 妊娠の届出.
"""

from __future__ import annotations

from server.application.catalogue.schema import Field, Notice, Procedure, Slot

KANA_PATTERN = ""  # kana fields are checked by type, not by pattern
PHONE = r"0\d{1,4}-?\d{1,4}-?\d{3,4}"

YES_NO = (("yes", "はい"), ("no", "いいえ"))


def person(*, address: bool = True, phone: bool = False, required: bool = True) -> tuple[Field, ...]:
    fields = [
        Field("name", "氏名", "text", required=required, max_length=100),
        Field("name_kana", "氏名（フリガナ）", "kana", required=required, max_length=100),
        Field("birth_date", "生年月日", "date", required=required),
    ]
    if address:
        fields.append(Field("address", "住所", "text", required=required, max_length=200))
    if phone:
        fields.append(Field("phone", "電話番号", "text", pattern=PHONE, max_length=20))
    return tuple(fields)


APPLICANT = Field("applicant", "申請者", "group", required=True, fields=person(phone=True))
PENSION = (("employees", "厚生年金"), ("national", "国民年金"), ("mutual_aid", "共済組合"), ("none", "加入なし"))

# ---- (ア) 児童手当 -------------------------------------------------------------------------

CHILD_ALLOWANCE_CERTIFICATION = Procedure(
    code="child_allowance.certification",
    category="child_allowance",
    title="児童手当の受給資格及び児童手当の額についての認定の請求",
    description="児童手当を受けるための認定請求（出生・転入など）。請求者本人名義の口座に支払います。",
    start_month="2017-07",
    life_events=("birth", "child_rearing", "moving"),
    keywords=("児童手当", "認定請求", "出生", "転入", "こども"),
    rules="child_allowance.certification",
    fields=(
        Field("claimant", "請求者", "group", required=True, fields=(
            *person(phone=True),
            Field("pension", "加入年金", "choice", required=True, choices=PENSION),
            Field("civil_servant", "公務員である", "boolean", required=True),
        )),
        Field("spouse", "配偶者", "group", fields=(
            Field("name", "氏名", "text", required=True, max_length=100),
            Field("name_kana", "氏名（フリガナ）", "kana", max_length=100),
            Field("birth_date", "生年月日", "date", required=True),
            Field("lives_with_claimant", "請求者と同居", "boolean", required=True),
        ), help="配偶者がいる場合に記入"),
        Field("children", "児童", "group", required=True, repeated=True, min_items=1, max_items=10, fields=(
            Field("name", "氏名", "text", required=True, max_length=100),
            Field("name_kana", "氏名（フリガナ）", "kana", max_length=100),
            Field("birth_date", "生年月日", "date", required=True),
            Field("relationship", "請求者との続柄", "choice", required=True,
                  choices=(("child", "子"), ("grandchild", "孫"), ("other", "その他"))),
            Field("lives_with_claimant", "請求者と同居", "boolean", required=True),
            Field("address", "別居の場合の住所", "text", max_length=200,
                  help="請求者と別居している場合は必須"),
        )),
        Field("payment_account", "振込先口座（請求者本人名義）", "group", required=True, fields=(
            Field("bank_code", "金融機関コード", "text", required=True, pattern=r"\d{4}"),
            Field("branch_code", "支店コード", "text", required=True, pattern=r"\d{3}"),
            Field("account_type", "種別", "choice", required=True,
                  choices=(("ordinary", "普通"), ("current", "当座"))),
            Field("account_number", "口座番号", "text", required=True, pattern=r"\d{7}"),
            Field("holder_kana", "口座名義（フリガナ）", "kana", required=True, max_length=100,
                  help="請求者本人の名義であること"),
        )),
    ),
    slots=(
        Slot("health_insurance", "請求者の健康保険証の写し", required=True, max_files=2),
        Slot("bank_book", "振込先口座の通帳の写し"),
        Slot("other", "その他の書類", max_files=5),
    ),
    notices=(Notice("児童手当の認定の請求に係る補正等の連絡及び結果通知", "2017-07"),),
)


def _simple(code: str, category: str, title: str, start: str, events: tuple[str, ...], extra: tuple[Field, ...],
            *, keywords: tuple[str, ...] = (), notices: tuple[Notice, ...] = (), slots: tuple[Slot, ...] = (),
            description: str = "") -> Procedure:
    return Procedure(code=code, category=category, title=title, start_month=start, life_events=events,
                     fields=(APPLICANT, *extra), keywords=keywords, notices=notices,
                     slots=slots or (Slot("other", "添付書類", max_files=5),), description=description)


CHILD_ALLOWANCE = (
    CHILD_ALLOWANCE_CERTIFICATION,
    _simple("child_allowance.revision", "child_allowance", "児童手当の額の改定の請求及び届出", "2017-07",
            ("birth", "child_rearing"), (
                Field("change", "改定の事由", "choice", required=True,
                      choices=(("increase", "児童の増（出生等）"), ("decrease", "児童の減"))),
                Field("child_name", "対象児童の氏名", "text", required=True, max_length=100),
                Field("child_birth_date", "対象児童の生年月日", "date", required=True),
                Field("event_date", "事由発生日", "date", required=True),
            ), keywords=("児童手当", "額改定", "出生"),
            notices=(Notice("児童手当の額の改定の請求及び届出に係る補正等の連絡及び結果通知", "2017-07"),)),
    _simple("child_allowance.change_notification", "child_allowance", "氏名変更／住所変更等の届出", "2017-07",
            ("moving", "child_rearing"), (
                Field("change", "変更内容", "choice", required=True,
                      choices=(("name", "氏名変更"), ("address", "住所変更"), ("account", "口座変更"),
                               ("other", "その他"))),
                Field("new_value", "変更後の内容", "text", required=True, max_length=200),
                Field("event_date", "変更日", "date", required=True),
            ), keywords=("児童手当", "氏名変更", "住所変更")),
    _simple("child_allowance.eligibility_loss", "child_allowance", "受給事由消滅の届出", "2017-07",
            ("moving", "child_rearing"), (
                Field("reason", "消滅の事由", "choice", required=True,
                      choices=(("moved_out", "転出"), ("no_children", "児童を養育しなくなった"),
                               ("civil_servant", "公務員になった"), ("other", "その他"))),
                Field("event_date", "事由発生日", "date", required=True),
            ), keywords=("児童手当", "消滅", "転出")),
    _simple("child_allowance.unpaid_claim", "child_allowance", "未支払の児童手当の請求", "2017-07",
            ("child_rearing",), (
                Field("deceased_name", "死亡した受給者の氏名", "text", required=True, max_length=100),
                Field("date_of_death", "死亡日", "date", required=True),
                Field("relationship", "受給者との続柄", "text", required=True, max_length=50),
            ), keywords=("児童手当", "未支払"),
            notices=(Notice("未支払の児童手当の請求に係る補正等の連絡及び結果通知", "2017-07"),)),
    _simple("child_allowance.donation", "child_allowance", "児童手当に係る寄附の申出／寄附変更等の申出", "2017-07",
            ("child_rearing",), (
                Field("kind", "申出の種類", "choice", required=True,
                      choices=(("new", "寄附の申出"), ("change", "寄附変更等の申出"))),
                Field("amount_yen", "寄附する額（月額・円）", "integer", required=True, min=1, max=1_000_000),
            ), keywords=("児童手当", "寄附", "寄付")),
    _simple("child_allowance.school_fee_collection", "child_allowance",
            "受給資格者の申出による学校給食費等の徴収等の申出／徴収等の変更等の申出", "2017-07",
            ("child_rearing",), (
                Field("kind", "申出の種類", "choice", required=True,
                      choices=(("new", "徴収等の申出"), ("change", "徴収等の変更等の申出"))),
                Field("fee", "費用の種類", "choice", required=True,
                      choices=(("school_lunch", "学校給食費"), ("nursery", "保育料"), ("other", "その他"))),
            ), keywords=("児童手当", "学校給食費", "徴収")),
    _simple("child_allowance.status_report", "child_allowance", "児童手当の現況届", "2018-06",
            ("child_rearing",), (
                Field("still_raising", "引き続き児童を養育している", "boolean", required=True),
                Field("pension", "加入年金", "choice", required=True, choices=PENSION),
            ), keywords=("児童手当", "現況届"),
            notices=(Notice("児童手当の現況届の提出時期の通知", "2018-05"),
                     Notice("現況届に係る補正等の連絡及び結果通知", "2018-07"))),
)

# ---- (イ) 保育 -----------------------------------------------------------------------------

CARE_REASONS = (
    ("employment", "就労"), ("pregnancy_birth", "妊娠・出産"), ("illness_disability", "疾病・障害"),
    ("caring", "介護・看護"), ("disaster", "災害復旧"), ("job_seeking", "求職活動"), ("study", "就学"),
    ("abuse_dv", "虐待・DV"), ("other", "その他"),
)
WEEKDAYS = (("mon", "月"), ("tue", "火"), ("wed", "水"), ("thu", "木"), ("fri", "金"), ("sat", "土"))

CHILDCARE_CERTIFICATION = Procedure(
    code="childcare.certification",
    category="childcare",
    title="支給認定申請書（保育の必要性の認定）",
    description=("子ども・子育て支援新制度の支給認定（1号・2号・3号）を同一様式で申請します。"
                 "認定区分は児童の年齢と保育の希望からサーバーが決めます。就労証明書は電子的に入力できます。"),
    start_month="2017-09",
    life_events=("nursery", "child_rearing", "birth"),
    keywords=("保育", "保育園", "保育所", "認定", "幼稚園", "ほいくえん"),
    rules="childcare.certification",
    fields=(
        Field("child", "認定を受ける児童", "group", required=True, fields=(
            Field("name", "氏名", "text", required=True, max_length=100),
            Field("name_kana", "氏名（フリガナ）", "kana", required=True, max_length=100),
            Field("birth_date", "生年月日", "date", required=True),
        )),
        Field("guardian", "保護者", "group", required=True, fields=(
            *person(phone=True),
            Field("relationship", "児童との続柄", "choice", required=True,
                  choices=(("father", "父"), ("mother", "母"), ("other", "その他"))),
        )),
        Field("wants_childcare", "保育を希望する（保育所・認定こども園の保育部分）", "boolean", required=True,
              help="いいえ＝教育のみ（幼稚園等）を希望"),
        Field("care_reason", "保育を必要とする事由", "choice", choices=CARE_REASONS,
              help="保育を希望する場合は必須"),
        Field("certification_class", "認定区分", "choice", computed=True,
              choices=(("1", "1号認定（満3歳以上・教育）"), ("2", "2号認定（満3歳以上・保育）"),
                       ("3", "3号認定（満3歳未満・保育）"))),
        Field("period", "利用を希望する期間", "group", required=True, fields=(
            Field("start_date", "開始日", "date", required=True),
            Field("end_date", "終了日", "date"),
        )),
        Field("facility_preferences", "希望施設（第1希望から）", "group", repeated=True, min_items=1, max_items=5,
              required=True, fields=(
                  Field("facility_name", "施設名", "text", required=True, max_length=100),
                  Field("facility_code", "施設番号", "text", pattern=r"[0-9A-Za-z-]{1,20}"),
              )),
        Field("days", "利用を希望する曜日", "multi_choice", choices=WEEKDAYS, help="保育を希望する場合は必須"),
        Field("hours", "利用を希望する時間", "group", fields=(
            Field("start_time", "開始時刻", "time", required=True),
            Field("end_time", "終了時刻", "time", required=True),
        ), help="保育を希望する場合は必須"),
        Field("tax_data_consent", "税情報の確認（情報連携による照会）に同意する", "boolean", required=True,
              help="同意しない場合は課税証明書を添付"),
        Field("employment_certificate", "就労証明書（電子的に入力する様式）", "group", fields=(
            Field("employer_name", "事業所名", "text", required=True, max_length=200),
            Field("employer_address", "事業所の所在地", "text", required=True, max_length=200),
            Field("employer_phone", "事業所の電話番号", "text", required=True, pattern=PHONE, max_length=20),
            Field("employment_type", "雇用の形態", "choice", required=True,
                  choices=(("regular", "正社員"), ("part_time", "パート・アルバイト"), ("dispatched", "派遣社員"),
                           ("contract", "契約社員"), ("self_employed", "自営業"), ("other", "その他"))),
            Field("employed_since", "雇用（予定）期間の始期", "date", required=True),
            Field("days_per_month", "就労日数（月）", "integer", required=True, min=1, max=31),
            Field("hours_per_day", "就労時間（日・時間）", "integer", required=True, min=1, max=24),
        ), help="保育を必要とする事由が就労で、就労証明書を添付しない場合は入力"),
    ),
    slots=(
        Slot("employment_certificate", "就労証明書", max_files=2),
        Slot("tax_certificate", "課税（所得）証明書（税情報の確認に同意しない場合）"),
        Slot("other", "その他の書類", max_files=5),
    ),
)

CHILDCARE = (
    CHILDCARE_CERTIFICATION,
    _simple("childcare.facility_application", "childcare", "保育施設等利用申込書", "2017-09",
            ("nursery", "child_rearing"), (
                Field("child_name", "児童の氏名", "text", required=True, max_length=100),
                Field("child_birth_date", "児童の生年月日", "date", required=True),
                Field("preferences", "希望施設", "text", required=True, repeated=True, min_items=1, max_items=5,
                      max_length=100),
                Field("start_date", "入所希望日", "date", required=True),
            ), keywords=("保育", "保育園", "入所", "申込"),
            notices=(Notice("募集要項の公表などHPの更新の通知", "2017-09"),
                     Notice("アンケート機能等を活用した効率的な面談の調整", "2017-09"))),
    _simple("childcare.status_report", "childcare", "保育施設等の現況届", "2017-09",
            ("nursery", "child_rearing"), (
                Field("child_name", "児童の氏名", "text", required=True, max_length=100),
                Field("still_needs_care", "引き続き保育を必要とする", "boolean", required=True),
                Field("care_reason", "保育を必要とする事由", "choice", choices=CARE_REASONS),
            ), keywords=("保育", "現況届"),
            notices=(Notice("現況届の提出時期の通知", "2017-09"),)),
)

# ---- (ウ) ひとり親支援 --------------------------------------------------------------------

SINGLE_PARENT = (
    _simple("single_parent.child_support_status_report", "single_parent", "児童扶養手当の現況届の事前送信",
            "2018-07", ("single_parent",), (
                Field("children_count", "対象児童数", "integer", required=True, min=1, max=20),
                Field("income_changed", "前年から所得の変動がある", "boolean", required=True),
                Field("living_situation", "生活状況", "text", max_length=500),
            ), keywords=("ひとり親", "児童扶養手当", "現況届", "母子家庭", "父子家庭"),
            notices=(Notice("現況届の提出時期の通知", "2018-05"),
                     Notice("現況届に係る補正等の連絡及び結果通知", "2018-09"))),
    _simple("single_parent.interview_booking", "single_parent", "面談の予約", "2018-07",
            ("single_parent",), (
                Field("preferred_dates", "希望日", "date", required=True, repeated=True, min_items=1, max_items=3),
                Field("preferred_time", "希望時刻", "time"),
                Field("topic", "相談したい内容", "choice", required=True,
                      choices=(("allowance", "手当"), ("employment", "就業支援"), ("housing", "住まい"),
                               ("other", "その他"))),
            ), keywords=("ひとり親", "面談", "予約", "相談"),
            notices=(Notice("アンケート機能を活用した効率的な面談の調整", "2018-07"),)),
)

# ---- (エ) 母子保健 ------------------------------------------------------------------------

PREGNANCY_NOTIFICATION = Procedure(
    code="maternal_child_health.pregnancy_notification",
    category="maternal_child_health",
    title="妊娠の届出",
    description="妊娠の届出をすると母子健康手帳が交付されます。",
    start_month="2017-07",
    life_events=("pregnancy",),
    keywords=("妊娠", "母子手帳", "母子健康手帳", "にんしん"),
    rules="maternal_child_health.pregnancy_notification",
    fields=(
        Field("pregnant_person", "妊婦", "group", required=True, fields=person(phone=True)),
        Field("weeks_of_pregnancy", "妊娠週数", "integer", required=True, min=1, max=42),
        Field("expected_delivery_date", "出産予定日", "date", required=True),
        Field("first_birth", "初産である", "boolean", required=True),
        Field("multiple_pregnancy", "多胎", "choice", choices=(("single", "単胎"), ("twins", "双胎"),
                                                               ("more", "三胎以上"))),
        Field("diagnosed_by", "診断を受けた医師・助産師", "group", required=True, fields=(
            Field("kind", "区分", "choice", required=True, choices=(("doctor", "医師"), ("midwife", "助産師"))),
            Field("name", "氏名", "text", required=True, max_length=100),
            Field("facility_name", "医療機関名", "text", required=True, max_length=200),
            Field("diagnosis_date", "診断日", "date", required=True),
        )),
    ),
    slots=(Slot("diagnosis_document", "妊娠の診断を受けたことがわかる書類"),),
    notices=(Notice("妊婦健診の勧奨の通知", "2017-07"),
             Notice("子供の月齢/年齢に応じた健診情報を通知", "2017-07")),
)

MATERNAL_CHILD_HEALTH = (
    PREGNANCY_NOTIFICATION,
    _simple("maternal_child_health.pre_survey", "maternal_child_health", "事前アンケート", "2017-07",
            ("pregnancy", "birth"), (
                Field("smoking", "喫煙している", "boolean", required=True),
                Field("support_at_home", "家事や育児を手伝ってくれる人がいる", "boolean", required=True),
                Field("worries", "心配なこと", "text", max_length=1000),
            ), keywords=("妊娠", "アンケート", "面談"),
            notices=(Notice("アンケート機能を活用した効率的な面談の調整を可能とする", "2017-07"),)),
)

NATIONAL: tuple[Procedure, ...] = (*CHILD_ALLOWANCE, *CHILDCARE, *SINGLE_PARENT, *MATERNAL_CHILD_HEALTH)
