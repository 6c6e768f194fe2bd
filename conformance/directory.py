"""The demo directory's fixed ids (README "The demo directory")."""

CONTOSO = "aaaaaaaa-0000-4000-8000-000000000001"
FABRIKAM = "bbbbbbbb-0000-4000-8000-000000000002"
DEMO_BOT = "cccccccc-0000-4000-8000-000000000003"
LEGACY_BOT = "cccccccc-0000-4000-8000-000000000006"
SECRET = "switchboard-demo-secret"
RECEPTION = "dddddddd-0000-4000-8000-000000000004"
RECEPTION_PHONE = "+14255550100"
LEGACY_RECEPTION = "dddddddd-0000-4000-8000-000000000007"
LEGACY_PHONE = "+14255550107"
HEIDI = "550fae72-d251-43ec-868c-373732c2704f"
ALEX = "751f6800-3180-414d-bd94-333364659951"
BUSY_BOB = "eeeeeeee-0000-4000-8000-000000000486"
SILENT_SAM = "eeeeeeee-0000-4000-8000-000000000408"
PSTN = "+12345678901"
ADMIN_KEY = "switchboard-demo-admin"
SCOPE = "https://graph.microsoft.com/.default"
NOTIFICATION_ISSUER = "https://api.botframework.com"

# Each bot app listens under its own path prefix on the test bot, so the receiver knows which
# app id a notification is addressed to (the JWT audience it must carry).
BOT_APPS = {"demo": DEMO_BOT, "legacy": LEGACY_BOT}
