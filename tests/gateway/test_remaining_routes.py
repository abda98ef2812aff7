"""Routes not walked by the stories: remove an attachment, withdraw, answer a survey, own records."""

from __future__ import annotations

import pytest
from onestop.notification.v1 import notification_pb2 as npb
from onestop.notification.v1 import notification_pb2_grpc as npb_grpc

from mobile_stub.app import GatewayCallError
from server.ids import new_id


async def test_remove_an_attachment_then_withdraw_the_application(platform, gateway, resident):
    _, card = resident
    async with gateway.phone(card) as phone:
        await phone.sign_in()
        application = await phone.create_child_allowance_claim()
        app_id = application["applicationId"]
        uploaded = await phone.attach_photo(app_id)
        attachment_id = uploaded["attachment"]["attachmentId"]
        removed = await phone.request("DELETE", f"/v1/applications/{app_id}/attachments/{attachment_id}")
        assert int(removed["version"]) == int(uploaded["version"]) + 1
        assert (await phone.get(app_id))["attachments"] == []
        with pytest.raises(GatewayCallError) as again:
            await phone.request("DELETE", f"/v1/applications/{app_id}/attachments/{attachment_id}")
        assert again.value.status_code == 404
        assert again.value.reason == "ATTACHMENT_NOT_FOUND"
        current = await phone.get(app_id)
        withdrawn = await phone.withdraw(app_id, int(current["version"]), "出し直します")
        assert withdrawn["status"] == "APPLICATION_STATUS_WITHDRAWN"
        with pytest.raises(GatewayCallError) as twice:
            await phone.withdraw(app_id, int(withdrawn["version"]))
        assert twice.value.status_code == 400
        assert twice.value.reason == "ALREADY_WITHDRAWN"


async def test_answer_a_survey_once_and_read_own_records(platform, gateway, resident):
    resident_id, card = resident
    staff = npb_grpc.NotificationServiceStub(platform.municipality("131016"))
    await staff.SendNotice(npb.SendNoticeRequest(
        request_id=new_id("rq"), municipality_code="131016", category="survey", title="子育てアンケート",
        body="{name} 様、ご意見をお聞かせください",
        audience=npb.Audience(residents=npb.Audience.Residents(resident_ids=[resident_id])),
        survey_choices=[npb.SurveyChoice(choice_id="yes", label="満足"), npb.SurveyChoice(choice_id="no", label="不満")]))
    async with gateway.phone(card) as phone:
        await phone.sign_in()
        notice = (await phone.request("GET", "/v1/notices"))["notices"][0]
        assert [c["choiceId"] for c in notice["surveyChoices"]] == ["yes", "no"]
        path = f"/v1/notices/{notice['noticeId']}/answer"
        answered = await phone.request("POST", path, json_body={"choiceId": "yes"},
                                       headers={"idempotency-key": "answer-1"})
        replay = await phone.request("POST", path, json_body={"choiceId": "yes"},
                                     headers={"idempotency-key": "answer-1"})
        assert replay == answered
        with pytest.raises(GatewayCallError) as second:
            await phone.request("POST", path, json_body={"choiceId": "no"})
        assert second.value.status_code == 409
        assert second.value.reason == "SURVEY_ALREADY_ANSWERED"
        records = await phone.request("GET", "/v1/me/records")
        assert records["self"]["residentId"] == resident_id
        assert records["self"]["name"] == card.holder.name
    anonymous = await gateway.client.get("/v1/me/records")
    assert anonymous.status_code == 401
