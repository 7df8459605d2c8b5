"""A real Scrapy crawl through tokenvault's middleware (run by test_scrapy.py in a process of its
own: Twisted's reactor runs once per process). It fetches pages of the test's target site and
writes, for every response, which token fetched it and when that token was attached, plus when
the middleware saw each revocation."""

from __future__ import annotations

import json
import os
import sys

import scrapy
from scrapy.crawler import CrawlerProcess

from tokenvault.scrapy import META_ATTACHED, META_TOKEN, TokenVaultMiddleware

OUT = sys.argv[1]
PAGES = int(os.environ["CRAWL_PAGES"])
rows = []


class Spider(scrapy.Spider):
    name = "tv"

    async def start(self):
        for i in range(PAGES):
            yield scrapy.Request(f"{os.environ['CRAWL_TARGET']}/page/{i}", callback=self.parse)

    def parse(self, response):
        rows.append({
            "url": response.url,
            "status": response.status,
            "token": response.request.meta.get(META_TOKEN),
            "attached_at": response.request.meta.get(META_ATTACHED),
        })


process = CrawlerProcess(settings={
    "LOG_LEVEL": os.environ.get("CRAWL_LOG_LEVEL", "WARNING"),
    "ROBOTSTXT_OBEY": False,
    "CONCURRENT_REQUESTS": 8,
    "RETRY_ENABLED": False,
    "HTTPERROR_ALLOW_ALL": True,
    "TELNETCONSOLE_ENABLED": False,
    "DOWNLOADER_MIDDLEWARES": {"tokenvault.scrapy.TokenVaultMiddleware": 610},
    "TOKENVAULT_URL": os.environ["TOKENVAULT_URL"],
    "TOKENVAULT_TOKEN": os.environ["TOKENVAULT_TOKEN"],
    "TOKENVAULT_POOL": os.environ["TOKENVAULT_POOL"],
    "TOKENVAULT_PER_SLOT": os.environ.get("TOKENVAULT_PER_SLOT") == "1",
    "TOKENVAULT_WAIT_MS": int(os.environ.get("TOKENVAULT_WAIT_MS", "10000")),
    "TOKENVAULT_PIPELINE": os.environ.get("TOKENVAULT_PIPELINE"),
    "TOKENVAULT_PIPELINE_RPS": float(os.environ.get("TOKENVAULT_PIPELINE_RPS", "0")),
    "TOKENVAULT_PIPELINE_DURATION_S": int(os.environ.get("TOKENVAULT_PIPELINE_DURATION_S", "0")),
})
crawler = process.create_crawler(Spider)
process.crawl(crawler)
process.start()
mw = next(m for m in crawler.engine.downloader.middleware.middlewares
          if isinstance(m, TokenVaultMiddleware))
with open(OUT, "w") as f:
    json.dump({"rows": rows, "revoked_at": mw.revoked_at, "last_attached": mw.last_attached,
               "stats": {k: v for k, v in crawler.stats.get_stats().items()
                         if isinstance(v, (int, float, str))}}, f)
