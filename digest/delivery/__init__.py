"""Delivery: getting each subscriber's edition to the mail server, exactly once as far as SMTP allows.

    message.py    pure message building (digests and confirmation emails, one MIME skeleton, one header encoder)
    transport.py  the transports (SMTP, outbox directory) and transport_for(settings)
    work.py       the typed values of the loop: Letter, Built, Outcome, Settlement
    build.py      compose a letter's email; the Builder strategies (inline, forked worker processes)
    claim.py      the Claimer seam and today's single-host LedgerClaimer
    loop.py       deliver_edition: claim -> build -> send -> record, returning a DeliveryReport

It must not decide who is due or what they get (digest.pipeline does), and only digest.store touches the database.
"""
