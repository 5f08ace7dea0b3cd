"""Two-factor sign-in with TOTP (django-otp): enrolment, the second sign-in step, and the
team setting that makes it mandatory for approvers and admins (README: "Two-factor sign-in")."""
