"""The demo's client side: writes game events to the log, and prints what a view holds.

    demo-events.py write <log-table> <count> [<first-seq>]   write <count> player and game events
    demo-events.py show <views-table> <key-prefix> [<limit>]  print a view's items (markers excluded)
    demo-events.py send <queue-url> <orders> <views-table> <latest-prefix>
        a producer: sends <orders> orders (two events each, a tenth of the messages twice, as SQS may
        deliver) and one malformed message to the ingest queue, then waits until the Latest view shows
        every order's last event and prints how long that took after the last SendMessage

`write` appends to the log table itself (the in-cluster part of the demo); `send` goes the way producers
go on AWS, through the ingest queue and the writer Lambda.
"""

import json
import os
import sys

import boto3

ddb = boto3.client("dynamodb", endpoint_url=os.environ.get("AWS_ENDPOINT_URL"))
sqs = boto3.client("sqs", endpoint_url=os.environ.get("AWS_ENDPOINT_URL"))
CUSTOMERS = ["ada", "bo", "cy·ü", "dee#1"]
PLAYERS = ["ada", "bo", "cy", "dee", "eli", "fay", "gus", "hal"]
GAMES = ["g001", "g002", "g003", "g004", "g005"]


def event(seq):
    s = lambda v: {"S": v}
    n = lambda v: {"N": str(v)}
    if seq % 3 == 0:
        game = GAMES[seq % len(GAMES)]
        return {
            "pk": s(f"GAME#{game}"), "sk": s(f"{seq:08d}"), "type": s("game"), "seq": n(seq),
            "gameId": s(game), "status": s(["lobby", "playing", "finished"][(seq // 3) % 3]),
            "round": n(seq // 15),
        }
    player = PLAYERS[seq % len(PLAYERS)]
    item = {
        "pk": s(f"PLAYER#{player}"), "sk": s(f"{seq:08d}"), "type": s("player"), "seq": n(seq),
        "playerId": s(player), "name": s(player.capitalize()), "level": n(1 + seq // 40),
        "score": n(seq * 10),
    }
    if seq % 2 == 0:
        item["points"] = n(f"{seq % 7}.5")
    return item


def write(table, count, first=1):
    items = [event(seq) for seq in range(first, first + count)]
    for i in range(0, len(items), 25):
        requests = [{"PutRequest": {"Item": it}} for it in items[i:i + 25]]
        while requests:
            out = ddb.batch_write_item(RequestItems={table: requests})
            requests = out.get("UnprocessedItems", {}).get(table, [])
    print(f"  wrote {count} events (seq {first}..{first + count - 1}) to {table}")


def plain(value):
    (kind, v), = value.items()
    return {"N": lambda: v, "S": lambda: v, "BOOL": lambda: v}.get(kind, lambda: json.dumps(v))()


def show(table, prefix, limit=8):
    items, start = [], None
    while True:
        kwargs = {"TableName": table}
        if start:
            kwargs["ExclusiveStartKey"] = start
        page = ddb.scan(**kwargs)
        items += [i for i in page["Items"] if i["pk"]["S"].startswith(prefix) and "~applied#" not in i["pk"]["S"]]
        start = page.get("LastEvaluatedKey")
        if not start:
            break
    items.sort(key=lambda i: (i["pk"]["S"], i["sk"]["S"]))
    print(f"  {len(items)} items in {table} under {prefix or '(whole table)'}")
    for item in items[:limit]:
        rest = {k: plain(v) for k, v in sorted(item.items()) if k not in ("pk", "sk", "logPk", "logSk")}
        print(f"    {item['pk']['S']:<28} {item['sk']['S']:<22} {json.dumps(rest)}")
    if len(items) > limit:
        print(f"    ... and {len(items) - limit} more")


def order_event(order, step):
    """Order `order`'s event `step` (1: placed, 2: paid), as the writer's message body."""
    amount = f"{order % 17}.{order % 100:02d}" if step == 1 else "0"
    item = {
        "pk": {"S": f"ORDER#{order}"}, "sk": {"S": str(step)}, "type": {"S": "order"}, "seq": {"N": str(step)},
        "orderId": {"S": str(order)}, "customer": {"S": CUSTOMERS[order % len(CUSTOMERS)]},
        "status": {"S": ["placed", "paid"][step - 1]}, "amount": {"N": amount},
    }
    return json.dumps({"Item": item})


def send(queue_url, orders, views_table, latest_prefix):
    import time

    bodies = [order_event(o, step) for step in (1, 2) for o in range(orders)]
    bodies += bodies[:: 10]  # redelivered
    bodies.insert(len(bodies) // 2, '{"Item": not json')
    for i in range(0, len(bodies), 10):
        entries = [{"Id": str(j), "MessageBody": b} for j, b in enumerate(bodies[i:i + 10])]
        failed = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries).get("Failed", [])
        if failed:
            sys.exit(f"SendMessageBatch failed: {failed}")
    sent = time.time()
    print(f"  sent {len(bodies)} messages ({orders} orders x 2 events, {len(bodies) - 2 * orders - 1} of them "
          "twice, 1 malformed) to the ingest queue")
    while time.time() - sent < 300:
        paid, start = 0, None
        while True:
            kwargs = {"TableName": views_table}
            if start:
                kwargs["ExclusiveStartKey"] = start
            page = ddb.scan(**kwargs)
            paid += sum(1 for i in page["Items"] if i["pk"]["S"].startswith(latest_prefix + "ORDER#")
                        and i.get("status", {}).get("S") == "paid")
            start = page.get("LastEvaluatedKey")
            if not start:
                break
        if paid == orders:
            print(f"  order-latest shows all {orders} orders paid {time.time() - sent:.1f} s after the last SendMessage")
            return
        time.sleep(0.5)
    sys.exit(f"only {paid} of {orders} orders paid in order-latest after 300 s; see .stack/logs/operator.log")


if __name__ == "__main__":
    if len(sys.argv) >= 6 and sys.argv[1] == "send":
        send(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5])
        sys.exit(0)
    if len(sys.argv) >= 4 and sys.argv[1] == "write":
        write(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 1)
    elif len(sys.argv) >= 4 and sys.argv[1] == "show":
        show(sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 8)
    else:
        sys.exit(__doc__)
