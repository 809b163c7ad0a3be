# Submit one program to Kiln over Kafka and read its result (pip install confluent-kafka).
import json, uuid
from confluent_kafka import Consumer, Producer

id = str(uuid.uuid4())
p = Producer({"bootstrap.servers": "127.0.0.1:9092"})
p.produce("kiln.submissions", key=id, headers={"content-type": "application/json"},
          value=json.dumps({"id": id, "language": "python", "source": "print(6 * 7)"}))
p.flush()
c = Consumer({"bootstrap.servers": "127.0.0.1:9092", "group.id": f"reader-{id}",
              "isolation.level": "read_committed", "auto.offset.reset": "earliest"})
c.subscribe(["kiln.results"])
while (m := c.poll(10)) is None or m.key().decode() != id:
    pass
print(json.loads(m.value())["stdout"], end="")  # 42
