"""The daily job, in steps: plan (who is due, each edition's window, candidates and profile), then the job that
ranks, renders and hands the editions to digest.delivery, under one lock. `digest run`, `send`, `preview`,
`rank` and the daemon all come through here; nothing here speaks SMTP or parses feeds.
"""
